"""`mlvalidate chain status`: chain readiness."""

from __future__ import annotations

import json

from ._common import EXIT_PASS, Formatter


def register(sub) -> None:
    from ..shipped import cite

    p = sub.add_parser(
        "chain",
        help="chain readiness: snapshot-block countdown, bootstrap thresholds, pre-eligibility, intent coverage",
        description=cite("Read a Gonka node's chain REST and RPC endpoints, on the queries Gonka's bootstrap documents "
                         "use (field paths: docs/chain-api.md, mlvalidate/chain/reading.py)."),
        formatter_class=Formatter,
    )
    csub = p.add_subparsers(dest="chain_command", metavar="SUBCOMMAND", required=True)
    sp = csub.add_parser(
        "status",
        help="when is the target epoch's snapshot block, and where does the bootstrap stand",
        description="The target epoch's PoC start and snapshot block, projected from the current epoch's "
        "poc_start_block_height and epoch_length (never epoch_shift): poc_start = current_poc_start + "
        "(N - current_epoch) * epoch_length, snapshot = poc_start - 500; blocks remaining and an ETA from the "
        "recent block time; the punishment epoch; W_threshold (params.delegation_params.w_threshold) and V_min, "
        "each with its source; the latest bootstrap_model_preeligibility event with all its attributes; intent "
        "coverage (participants with a PoCIntent for the model, intent weight / total weight; lookups still "
        "failing after retries are listed as skipped); the field paths read and those not found; and the "
        "transactions a host may need next (printed only, never signed or sent). Every answer is read strictly: "
        "a height, epoch or length that is negative or past int64 (epoch_length 1..1e8), a weight that is not a "
        "finite number, is one line naming the field and its URL. --timeout bounds the whole command; the "
        "intent lookups run --lookups at a time, and those not done in time are listed as skipped. "
        "Exit 0, or 2 when the chain cannot be read.",
        formatter_class=Formatter,
    )
    sp.add_argument("--node", required=True, metavar="URL", help="a Gonka node's public URL, e.g. http://node3.gonka.ai:8000")
    sp.add_argument("--model", default=None, metavar="ID", help="model id (default: MiniMaxAI/MiniMax-M2.7)")
    sp.add_argument("--epoch", type=int, default=None, metavar="N", help="target epoch (default: the next one)")
    sp.add_argument("--json", action="store_true", help="print the status as JSON")
    sp.add_argument("--timeout", type=float, default=120.0, metavar="S",
                    help="bound of the whole command: every request ends within it, and participants whose intent "
                    "lookup is not done by then are listed as skipped (the intent may be undercounted)")
    sp.add_argument("--lookups", type=int, default=8, metavar="N",
                    help="intent lookups (one GET poc_delegation/{address} per participant) at a time, 1..64; each "
                    "keeps the bootstrap documents' 0.15 s between its own lookups")

    def run(args) -> int:
        from ..chain import (
            chain_status,
            readiness_lines,
            source_lines,
            transaction_lines,
        )
        from ..http_client import check_url

        from ..errors import MlvalidateError

        check_url(args.node, "--node")
        if not 0 < args.timeout < float("inf"):
            raise MlvalidateError(f"--timeout must be a positive number, got {args.timeout}")
        if not 1 <= args.lookups <= 64:
            raise MlvalidateError(f"--lookups must be 1..64, got {args.lookups}")
        s = chain_status(args.node, args.model, args.epoch, timeout_s=args.timeout, lookup_workers=args.lookups)
        if args.json:
            print(json.dumps(s.as_dict(), indent=2))
        else:
            print(f"chain status of {args.node} for {s.model}")
            print("\n".join(readiness_lines(s) + source_lines(s) + transaction_lines(s)))
        return EXIT_PASS

    sp.set_defaults(func=run)
