"""`mlvalidate compare`: a comparison report over run bundles."""

from __future__ import annotations

from ._common import Formatter


def register(sub) -> None:
    p = sub.add_parser(
        "compare",
        help="compare run bundles: verdicts, distance distributions, cross-run distance matrix, throughput, "
        "hardware groups ranked by speed, energy and cost",
        description="Read run bundles (folders written by `validate --out`, `fleet` or `demo`) and write report.md and "
        "a self-contained report.html: the reference, model, stat test, harness version and run time at the top, a "
        "verdict table, one colour per verdict (profile, the node's hardware, counts, p-value, steady "
        "nonces/min against the profile's published figure and roofline), the median L2 between every pair of runs' "
        "vectors over their shared nonces as a heat map, ONE plot of every run's distance distribution (ECDFs on a "
        "log axis, the gate marked) and throughput bars per run against the published figure and the roofline. "
        "Plots need the `plots` extra (matplotlib); without it the report has every table and a text histogram per run. "
        "Each run's hardware is the node's own as its bundle records it, with its source (the node, this host, the "
        "operator's --gpus or profile), or unknown: never the machine that ran the harness for a remote node.\n\n"
        "Hardware comparison: the runs are grouped by that hardware (GPU model x count x profile or layout; unknown "
        "hardware is one group, \"unknown\", never ranked); per group the median and spread over its runs of nonces/s, "
        "nonces/s per GPU, joules per nonce (the throughput window's NVML energy, recorded only where the node's GPUs "
        "were the harness machine's), nonces per kWh and per GPU-hour, and with --prices $ per million nonces and "
        "nonces per $ (GPU rental and energy apart); groups ranked by nonces/s, per GPU, per kWh and per $, the "
        "profile's published figure beside each, throttled windows counted; a plot of throughput against joules per "
        "nonce, one point per run coloured by group. Only runs whose vectors passed rank: FAIL runs (and INCOMPLETE, "
        "ERROR, skipped validations) are listed apart.\n\n"
        "--prices FILE (YAML):\n"
        "  gpu_hour_usd:      # $ per GPU-hour, by GPU model; every word of a key must be a word of the run's GPU\n"
        "    H100: 2.49       # model name (\"NVIDIA H100 80GB HBM3\"), the key with the most words wins\n"
        "    A100 80GB: 1.39\n"
        "  kwh_usd: 0.12      # $ per kWh\n\n"
        "exit codes (the runs' verdicts, as a fleet's): 0 every run passed (PASS or PASS-with-mismatches; a skipped "
        "validation counts as passed); 1 some run FAILed (fraud proven by its bundle); 2 no run FAILed but some run is "
        "INCOMPLETE or ERROR, or a bundle or the --prices file could not be read (then nothing is written)",
        formatter_class=Formatter,
    )
    p.add_argument("run_dirs", nargs="+", metavar="RUN_DIR", help="run bundle folders")
    p.add_argument("--out", default="mlvalidate-compare", help="folder for report.md and report.html")
    p.add_argument("--prices", default=None, metavar="FILE",
                   help="YAML of $ per GPU-hour by GPU model and $ per kWh (above): adds $ per million nonces and nonces "
                   "per $; without it, nonces per GPU-hour and per kWh only")

    def run(args) -> int:
        from ..report.compare import write_compare

        paths = write_compare(args.run_dirs, args.out, profiles=profile_or_none, prices=args.prices)
        print(f"wrote {paths['markdown']} and {paths['html']}")
        counts: dict[str, int] = {}
        for v in paths["verdicts"]:
            counts[v] = counts.get(v, 0) + 1
        print(f"runs: {', '.join(f'{v} {n}' for v, n in sorted(counts.items()))} (exit {paths['exit_code']})")
        return paths["exit_code"]

    p.set_defaults(func=run)


def profile_or_none(name: str):
    """The profile a bundle names, when it loads here (its published figure and roofline)."""
    from ..errors import MlvalidateError
    from ..serving.profiles import load_profile

    try:
        return load_profile(name)
    except (MlvalidateError, OSError, ValueError):
        return None
