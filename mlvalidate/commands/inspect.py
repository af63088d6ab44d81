"""`mlvalidate inspect`: summarise a golden reference."""

from __future__ import annotations

from ._common import Formatter


def register(sub) -> None:
    p = sub.add_parser(
        "inspect",
        help="summarise a golden reference",
        description="Print a golden reference's model, nonces, PoC params, stat test (with the "
        "mismatch count at which fraud is declared), vector norms and pairwise distances.",
        formatter_class=Formatter,
    )
    p.add_argument("reference", help="reference JSON file, or a model id looked up in artifacts/")
    p.add_argument("--json", action="store_true", help="print machine-readable JSON instead of text")

    def run(args) -> int:
        from ..inspect_ref import inspect_reference

        return inspect_reference(args.reference, as_json=args.json)

    p.set_defaults(func=run)
