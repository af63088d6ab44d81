"""Command line: argument parsing and exit codes only.

Exit codes (every command): 0 PASS / success, 1 FAIL (fraud detected), 2 error or
incomplete run. Errors are one line on stderr: `error: what happened — what to do next`.
Each command's work lives in the module it names; this file only wires arguments to it.
"""

from __future__ import annotations

import argparse
import sys

from . import __version__
from .errors import MlvalidateError

EXIT_PASS, EXIT_FAIL, EXIT_ERROR = 0, 1, 2

DESCRIPTION = """\
PoC v2 validation harness for Gonka ML nodes.

Answers, before the snapshot block: will my deployment's PoC vectors pass the chain's
check, and how fast is it? Vectors are compared with golden references (artifacts/*.json)
under the reference's L2 threshold and binomial fraud test.

exit codes: 0 PASS (also PASS with mismatches within tolerance), 1 FAIL (fraud detected),
            2 error or incomplete run (bad input, unreachable node, not every vector checked)
"""


class _Formatter(argparse.RawDescriptionHelpFormatter, argparse.ArgumentDefaultsHelpFormatter):
    pass


# ----------------------------------------------------------------------------------------
# commands: each has an _add_<name>(subparsers) that registers its arguments and sets
# `func` to a callable(args) -> exit code.
# ----------------------------------------------------------------------------------------
def _add_inspect(sub) -> None:
    p = sub.add_parser(
        "inspect",
        help="summarise a golden reference",
        description="Print a golden reference's model, nonces, PoC params, stat test (with the "
        "mismatch count at which fraud is declared), vector norms and pairwise distances.",
        formatter_class=_Formatter,
    )
    p.add_argument("reference", help="reference JSON file, or a model id looked up in artifacts/")
    p.add_argument("--json", action="store_true", help="print machine-readable JSON instead of text")

    def run(args) -> int:
        from .inspect_ref import inspect_reference

        return inspect_reference(args.reference, as_json=args.json)

    p.set_defaults(func=run)


def _add_stat_test_args(p) -> None:
    g = p.add_argument_group("stat test (overrides; default: the reference's values, else the server defaults)")
    g.add_argument("--threshold", type=float, dest="dist_threshold", default=None, help="L2 distance gate")
    g.add_argument("--p-mismatch", type=float, default=None, help="expected honest mismatch rate")
    g.add_argument("--fraud-threshold", type=float, default=None, help="p-value below which fraud is declared")


def _add_check(sub) -> None:
    p = sub.add_parser(
        "check",
        help="compare a file of computed vectors with a reference, offline",
        description="Compare computed vectors (a JSON file in the golden-reference schema) with a "
        "reference. Every reference nonce must have a usable computed vector: one that is "
        "missing or invalid counts as a mismatch and the verdict cannot be PASS.",
        formatter_class=_Formatter,
    )
    p.add_argument("reference", help="reference JSON file, or a model id looked up in artifacts/")
    p.add_argument("computed", help="computed vectors, JSON in the golden-reference schema")
    p.add_argument("--json", action="store_true", help="print the comparison as JSON")
    p.add_argument("--device", default=None, help="torch device for the comparison (default: cuda if available)")
    _add_stat_test_args(p)

    def run(args) -> int:
        from .check import check_files

        return check_files(
            args.reference,
            args.computed,
            overrides={
                "dist_threshold": args.dist_threshold,
                "p_mismatch": args.p_mismatch,
                "fraud_threshold": args.fraud_threshold,
            },
            as_json=args.json,
            device=args.device,
        )

    p.set_defaults(func=run)


def _add_make_tiny(sub) -> None:
    p = sub.add_parser(
        "make-tiny",
        help="write a tiny random MiniMax-M2 checkpoint in the real layout",
        description="Write a tiny random MiniMax-M2 (config.json fields, tensor names and dtypes, "
        "sharded safetensors + index, block-FP8 with --fp8, tokenizer) for tests and demos "
        "without a model hub. OUT_DIR must be new or empty; --force reuses a directory, "
        "replacing the checkpoint files written there before and leaving other files alone.",
        formatter_class=_Formatter,
    )
    p.add_argument("out_dir", metavar="OUT_DIR", help="directory to write (new or empty)")
    p.add_argument("--fp8", action="store_true", help="block-FP8 weights (F8_E4M3 + weight_scale_inv), as released")
    p.add_argument("--seed", type=int, default=0, help="weights seed (same seed: same weights, bf16 or FP8)")
    p.add_argument("--hidden-size", type=int, default=128, help="hidden size (a multiple of 128 with --fp8)")
    p.add_argument("--layers", type=int, default=4, help="decoder layers")
    p.add_argument("--experts", type=int, default=8, help="routed experts per layer (top-2)")
    p.add_argument("--gain", type=float, default=1.5, help="weights are N(0,1) * gain / sqrt(fan_in)")
    p.add_argument("--force", action="store_true", help="reuse a non-empty OUT_DIR")

    def run(args) -> int:
        from .deploy.tiny import describe_checkpoint, make_tiny

        out = make_tiny(
            args.out_dir, fp8=args.fp8, seed=args.seed, hidden_size=args.hidden_size,
            num_layers=args.layers, num_experts=args.experts, gain=args.gain, force=args.force,
        )  # fmt: skip
        info = describe_checkpoint(out)
        kind = "block-FP8" if info["fp8"] else "bf16"
        print(f"wrote {info['model_type']} ({kind}) to {info['path']}: {info['params']:,} parameters, "
              f"{info['tensors']} tensors, {info['bytes']:,} bytes")  # fmt: skip
        for name, size in info["files"].items():
            print(f"  {size:>12,}  {name}")
        return EXIT_PASS

    p.set_defaults(func=run)


def _add_bake(sub) -> None:
    p = sub.add_parser(
        "bake",
        help="compute a golden reference with the reference engine",
        description="Compute PoC vectors for nonces 0..N-1 with a local checkpoint and write them in the "
        "golden-reference schema, recording the engine, device, dtype and batch size.",
        formatter_class=_Formatter,
    )
    p.add_argument("--model", required=True, metavar="DIR", help="local checkpoint directory (bf16 or block-FP8)")
    p.add_argument("--model-id", required=True, help="model id written into the reference (e.g. org/name)")
    p.add_argument("--out", required=True, metavar="FILE", help="reference JSON to write")
    p.add_argument("--nonces", type=int, default=200, help="number of nonces (0..N-1)")
    p.add_argument("--batch-size", type=int, default=32, help="nonces per forward (numerics depend on it)")
    p.add_argument("--device", default="cpu", help="torch device")
    p.add_argument("--dtype", default="bf16", choices=["bf16", "fp32"], help="activation dtype")
    p.add_argument("--seq-len", type=int, default=1024, help="PoC sequence length")
    p.add_argument("--block-hash", default="TEST_BLOCK")
    p.add_argument("--public-key", default="test_pub_keys_v2")
    p.add_argument("--k-dim", type=int, default=12)
    p.add_argument("--dist-threshold", type=float, default=0.75, help="L2 gate written into the reference")
    p.add_argument("--p-mismatch", type=float, default=0.1, help="written into the reference's stat_test")
    p.add_argument("--fraud-threshold", type=float, default=0.05, help="written into the reference's stat_test")

    def run(args) -> int:
        from .bake import bake_reference
        from .engines.base import PocParams
        from .engines.reference import ReferenceEngine

        if args.nonces < 1 or args.batch_size < 1 or args.seq_len < 1:
            raise MlvalidateError("--nonces, --batch-size and --seq-len must be >= 1")
        engine = ReferenceEngine(args.model, device=args.device, dtype=args.dtype, model_id=args.model_id)
        params = PocParams(block_hash=args.block_hash, public_key=args.public_key, seq_len=args.seq_len, k_dim=args.k_dim)
        path, res = bake_reference(
            engine, model_id=args.model_id, out=args.out, n_nonces=args.nonces, batch_size=args.batch_size,
            params=params, stat_test={"dist_threshold": args.dist_threshold, "p_mismatch": args.p_mismatch,
                                      "fraud_threshold": args.fraud_threshold},
        )
        print(f"wrote {path}: {len(res.nonces)} vectors in {res.elapsed_s:.1f} s ({res.nonces_per_second:.2f} nonces/s)")
        return EXIT_PASS

    p.set_defaults(func=run)


def _add_demo(sub) -> None:
    p = sub.add_parser(
        "demo",
        help="end-to-end dry run on this machine: honest node PASSes, cheating node FAILs",
        description="Make a tiny MiniMax-M2 (real FP8 layout) and a 4-bit cheating copy, bake a 200-nonce "
        "reference, then validate an honest re-computation (float32, other batch size) and the cheater. "
        "Writes one run bundle per validation. Exit 0 only if the honest node passed and the cheater failed.",
        formatter_class=_Formatter,
    )
    p.add_argument("--out", default=None, metavar="DIR", help="output folder (default: mlvalidate-runs/demo-<time>)")
    p.add_argument("--seed", type=int, default=0, help="seed of the tiny checkpoint's weights")

    def run(args) -> int:
        from .demo import run_demo

        return run_demo(args.out, seed=args.seed)

    p.set_defaults(func=run)


_COMMANDS = [_add_demo, _add_inspect, _add_check, _add_make_tiny, _add_bake]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="mlvalidate", description=DESCRIPTION, formatter_class=_Formatter)
    parser.add_argument("--version", action="version", version=f"mlvalidate {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for add in _COMMANDS:
        add(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return EXIT_ERROR
    try:
        return int(args.func(args))
    except MlvalidateError as e:
        print(f"error: {e.one_line()}", file=sys.stderr)
        return e.exit_code
    except KeyboardInterrupt:
        print("error: interrupted — nothing was reported as passed", file=sys.stderr)
        return EXIT_ERROR


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
