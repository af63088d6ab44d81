"""`mlvalidate demo`: the whole harness on this machine, honest node and cheater."""

from __future__ import annotations

from ._common import EXIT_ERROR, EXIT_PASS, Formatter, require_extra


def register(sub) -> None:
    p = sub.add_parser(
        "demo",
        help="end-to-end dry run on this machine: honest node PASSes, cheating node FAILs",
        description="Make a tiny MiniMax-M2 (real FP8 layout) and a 4-bit cheating copy, bake a 200-nonce "
        "reference, then validate an honest re-computation (float32, other batch size) and the cheater. "
        "Writes one run bundle per validation. Exit 0 only if the honest node passed and the cheater failed, 2 otherwise.",
        formatter_class=Formatter,
    )
    p.add_argument("--out", default=None, metavar="DIR", help="output folder (default: mlvalidate-runs/demo-<time>)")
    p.add_argument("--seed", type=int, default=0, help="seed of the tiny checkpoint's weights")
    p.add_argument("--junit", default=None, metavar="FILE", help="also write JUnit XML: one test case per expectation")

    def run(args) -> int:
        require_extra("reference", "demo")
        from ..demo import junit_phases, run_demo, summary_lines

        res = run_demo(args.out, seed=args.seed)
        print("\n".join(summary_lines(res.runs, res.stat_test)))
        if args.junit:
            from ..report.junit import write_junit

            write_junit(args.junit, "demo", junit_phases(res), {"reference": str(res.reference)})
        h, c = (res.runs[k].comparison.verdict.value for k in ("honest", "cheater"))
        print(f"\n{'DEMO OK' if res.ok else 'DEMO FAILED'}: honest node {h}, cheating node {c} "
              f"({res.seconds:.0f} s in all; everything is under {res.out})")
        return EXIT_PASS if res.ok else EXIT_ERROR

    p.set_defaults(func=run)
