"""`mlvalidate make-tiny`: a tiny random MiniMax-M2 checkpoint in the real layout."""

from __future__ import annotations

from ._common import EXIT_PASS, Formatter, require_extra


def register(sub) -> None:
    p = sub.add_parser(
        "make-tiny",
        help="write a tiny random MiniMax-M2 checkpoint in the real layout",
        description="Write a tiny random MiniMax-M2 (config.json fields, tensor names and dtypes, "
        "sharded safetensors + index, block-FP8 with --fp8, tokenizer) for tests and demos "
        "without a model hub. OUT_DIR must be new or empty; --force reuses a directory, "
        "replacing the checkpoint files written there before and leaving other files alone.\n\n"
        "exit codes: 0 written; 2 it could not be (OUT_DIR not empty, bad sizes, a missing extra)",
        formatter_class=Formatter,
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
        require_extra("reference", "make-tiny")
        from ..fixtures.tiny import describe_checkpoint, make_tiny

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
