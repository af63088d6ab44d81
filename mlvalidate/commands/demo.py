"""`mlvalidate demo`: the whole harness on this machine, honest node and cheater."""

from __future__ import annotations

from ._common import Formatter


def register(sub) -> None:
    p = sub.add_parser(
        "demo",
        help="end-to-end dry run on this machine: honest node PASSes, cheating node FAILs",
        description="Make a tiny MiniMax-M2 (real FP8 layout) and a 4-bit cheating copy, bake a 200-nonce "
        "reference, then validate an honest re-computation (float32, other batch size) and the cheater. "
        "Writes one run bundle per validation. Exit 0 only if the honest node passed and the cheater failed.",
        formatter_class=Formatter,
    )
    p.add_argument("--out", default=None, metavar="DIR", help="output folder (default: mlvalidate-runs/demo-<time>)")
    p.add_argument("--seed", type=int, default=0, help="seed of the tiny checkpoint's weights")
    p.add_argument("--junit", default=None, metavar="FILE", help="also write JUnit XML: one test case per expectation")

    def run(args) -> int:
        from ..demo import run_demo

        return run_demo(args.out, seed=args.seed, junit=args.junit)

    p.set_defaults(func=run)
