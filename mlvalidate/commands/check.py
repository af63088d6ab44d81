"""`mlvalidate check`: compare a file of computed vectors with a reference, offline."""

from __future__ import annotations

import json

from ._common import Formatter, add_stat_test_args


def register(sub) -> None:
    p = sub.add_parser(
        "check",
        help="compare a file of computed vectors with a reference, offline",
        description="Compare computed vectors (a JSON file in the golden-reference schema) with a "
        "reference. Every reference nonce must have a usable computed vector: one that is "
        "missing or invalid counts as a mismatch and the verdict cannot be PASS.\n\n"
        "exit codes: 0 PASS or PASS-with-mismatches; 1 FAIL (fraud proven by the computed vectors); 2 INCOMPLETE "
        "(a reference nonce without a usable vector) or a file that cannot be read",
        formatter_class=Formatter,
    )
    p.add_argument("reference", help="reference JSON file, or a model id looked up in artifacts/")
    p.add_argument("computed", help="computed vectors, JSON in the golden-reference schema")
    p.add_argument("--json", action="store_true", help="print the comparison as JSON")
    p.add_argument("--device", default=None,
                   help="torch device for the distances, e.g. cuda (needs torch with that device); without it "
                   "numpy computes them on this CPU")
    add_stat_test_args(p)

    def run(args) -> int:
        from ..check import check_files

        res = check_files(args.reference, args.computed, device=args.device,
                          overrides={"dist_threshold": args.dist_threshold, "p_mismatch": args.p_mismatch,
                                     "fraud_threshold": args.fraud_threshold})
        print(json.dumps(as_json(res), indent=2) if args.json else "\n".join(text(res)))
        return res.comparison.verdict.exit_code

    p.set_defaults(func=run)


def as_json(res) -> dict:
    comp, got = res.comparison, res.computed
    return {"reference": str(res.reference.path), "computed": str(got.path), **comp.summary(),
            "stat_test_source": res.stat_test.sources,
            "invalid_reasons": {str(k): v for k, v in got.problems.items()},
            "distances": {str(int(n)): (None if d != d else float(d)) for n, d in zip(comp.nonces, comp.distances)}}


def text(res) -> list[str]:
    from ..report.text import comparison_block

    ref, got, comp = res.reference, res.computed, res.comparison
    lines = [
        f"VERDICT: {comp.verdict.description}",
        f"reference     {ref.path} ({ref.model}, {ref.n} vectors)",
        f"computed      {got.path} ({got.intake.n} distinct nonces)",
        *comparison_block(comp, res.stat_test),
    ]
    for nonce, why in list(got.problems.items())[:10]:
        lines.append(f"              nonce {nonce}: {why}")
    if len(got.problems) > 10:
        lines.append(f"              … and {len(got.problems) - 10} more unusable nonce(s) (--json lists every one)")
    return lines
