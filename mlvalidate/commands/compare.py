"""`mlvalidate compare`: a comparison report over run bundles."""

from __future__ import annotations

from ._common import Formatter


def register(sub) -> None:
    p = sub.add_parser(
        "compare",
        help="compare run bundles: verdicts, distance histograms, cross-run distance matrix, throughput",
        description="Read run bundles (folders written by `validate --out` or `demo`) and write report.md and a "
        "self-contained report.html: a verdict table (profile, GPUs, counts, p-value, steady nonces/min against "
        "the profile's published figure and roofline), each run's distance histogram against its threshold, the "
        "median L2 between every pair of runs' vectors over their shared nonces, and throughput bars per profile. "
        "Plots need the `plots` extra (matplotlib); without it the report has every table.",
        formatter_class=Formatter,
    )
    p.add_argument("run_dirs", nargs="+", metavar="RUN_DIR", help="run bundle folders")
    p.add_argument("--out", default="mlvalidate-compare", help="folder for report.md and report.html")

    def run(args) -> int:
        from ..report.compare import run_compare

        return run_compare(args.run_dirs, args.out)

    p.set_defaults(func=run)
