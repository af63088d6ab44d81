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


_COMMANDS = [_add_inspect, _add_check]


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
