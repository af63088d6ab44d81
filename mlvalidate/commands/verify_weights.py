"""`mlvalidate verify-weights`: every problem of a checkpoint directory, printed, and the exit code."""

from __future__ import annotations

import json
import sys

from ._common import EXIT_ERROR, EXIT_PASS, Formatter

MAX_TEXT_PROBLEMS = 200  # the text report shows this many; --json lists every one


def register(sub) -> None:
    p = sub.add_parser(
        "verify-weights",
        help="check a local checkpoint: shards, headers, dtypes/shapes vs config.json, pinned commit",
        description="List every problem of a checkpoint directory: shards of model.safetensors.index.json "
        "missing or with a header the safetensors library rejects (e.g. truncated), tensors missing from their "
        "shard or unlisted, for MiniMax-M2 every dtype and shape against config.json (FP8 weights and "
        "block scales, F32 router), and the commit the directory records (pull record or huggingface_hub "
        "metadata) against the chain's pin. Reads headers only. Exit 0 clean, 2 with any problem.",
        formatter_class=Formatter,
    )
    p.add_argument("dir", metavar="DIR", help="checkpoint directory (e.g. what `mlvalidate pull` wrote)")
    p.add_argument("--revision", default=None, metavar="COMMIT",
                   help="expected full commit sha, the chain's pin when not given")
    p.add_argument("--json", action="store_true", help="print the report as JSON (every problem)")
    p.set_defaults(func=run)


def run(args) -> int:
    from ..hub.verify import verify_weights

    return print_report(verify_weights(args.dir, revision=args.revision), as_json=args.json)


def summary(report) -> str:
    """The one line of a clean report: where it comes from, what it holds, what was checked."""
    from ..hub.plan import human_bytes

    where = f"{report.repo or '?'} @ {report.commit[:12] if report.commit else '?'} ({report.commit_source})"
    size = f"{report.shard_bytes:,} bytes ({human_bytes(report.shard_bytes)})"
    what = f"{report.shards} shards, {report.tensors:,} tensors, {size}"
    if report.deep_checks:
        kind = f"block-FP8 {report.fp8_block[0]}x{report.fp8_block[1]}" if report.fp8_block else "bf16"
        deep = f"; dtypes and shapes match config.json (MiniMax-M2, {kind})"
    else:
        deep = "; index, shards and headers consistent"
    return f"ok: {report.local_dir}: {where}: {what}{deep}"


def print_report(report, as_json: bool = False) -> int:
    """Print a hub.verify.VerifyReport (text: a one-line summary, or every problem; or JSON) and
    return the exit code: 0 clean, 2 with problems (plus one `error:` line on stderr)."""
    if as_json:
        print(json.dumps(report.to_json(), indent=2))
    elif report.ok:
        print(summary(report))
        for note in report.notes:
            print(f"note: {note}")
    else:
        print(f"verify-weights {report.local_dir}: {len(report.problems)} problem(s)")
        for line in report.problems[:MAX_TEXT_PROBLEMS]:
            print(f"  - {line}")
        if len(report.problems) > MAX_TEXT_PROBLEMS:
            print(f"  ... and {len(report.problems) - MAX_TEXT_PROBLEMS} more (--json lists every one)")
        for note in report.notes:
            print(f"note: {note}")
    if report.ok:
        return EXIT_PASS
    print(f"error: {len(report.problems)} problem(s) in {report.local_dir} — {report.next_step()}", file=sys.stderr)
    return EXIT_ERROR
