"""`mlvalidate verify-weights`: every problem of a checkpoint directory."""

from __future__ import annotations

from ._common import Formatter


def register(sub) -> None:
    p = sub.add_parser(
        "verify-weights",
        help="check a local checkpoint: shards, headers, dtypes/shapes vs config.json, pinned commit",
        description="List every problem of a checkpoint directory: shards of model.safetensors.index.json "
        "missing or with a header the strict reader rejects (e.g. truncated), tensors missing from their "
        "shard or unlisted, for MiniMax-M2 every dtype and shape against config.json (FP8 weights and "
        "block scales, F32 router), and the commit the directory records (pull record or huggingface_hub "
        "metadata) against the chain's pin. Reads headers only. Exit 0 clean, 2 with any problem.",
        formatter_class=Formatter,
    )
    p.add_argument("dir", metavar="DIR", help="checkpoint directory (e.g. what `mlvalidate pull` wrote)")
    p.add_argument("--revision", default=None, metavar="COMMIT",
                   help="expected full commit sha, the chain's pin when not given")
    p.add_argument("--json", action="store_true", help="print the report as JSON (every problem)")

    def run(args) -> int:
        from ..hub.verify import run_verify_weights

        return run_verify_weights(args.dir, revision=args.revision, as_json=args.json)

    p.set_defaults(func=run)
