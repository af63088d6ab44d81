"""`mlvalidate check`: compare a file of computed vectors with a reference, offline."""

from __future__ import annotations

from ._common import Formatter, add_stat_test_args


def register(sub) -> None:
    p = sub.add_parser(
        "check",
        help="compare a file of computed vectors with a reference, offline",
        description="Compare computed vectors (a JSON file in the golden-reference schema) with a "
        "reference. Every reference nonce must have a usable computed vector: one that is "
        "missing or invalid counts as a mismatch and the verdict cannot be PASS.",
        formatter_class=Formatter,
    )
    p.add_argument("reference", help="reference JSON file, or a model id looked up in artifacts/")
    p.add_argument("computed", help="computed vectors, JSON in the golden-reference schema")
    p.add_argument("--json", action="store_true", help="print the comparison as JSON")
    p.add_argument("--device", default=None, help="torch device for the comparison (default: cuda if available)")
    add_stat_test_args(p)

    def run(args) -> int:
        from ..check import check_files

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
