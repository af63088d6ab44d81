"""`mlvalidate fleet`: validate every ML node of a host concurrently, then one fleet report.

Wiring only: discovery and the runs are mlvalidate.fleet, the report is report/fleet_report.py.
"""

from __future__ import annotations

import datetime as _dt
from pathlib import Path

from .. import interrupts
from ..errors import MlvalidateError
from ._common import (
    Formatter,
    add_gpus_arg,
    add_in_flight_arg,
    add_stat_test_args,
    add_stop_on_exit_arg,
    add_throughput_args,
    gpus_option,
    node_run_options,
)
from ._fresh import add_fresh_args, fresh_plan


def register(sub) -> None:
    p = sub.add_parser(
        "fleet",
        help="validate every ML node of a host concurrently (admin API, a node list, or URLs): one bundle per node "
        "and one fleet report",
        description="Find a host's ML nodes — its network node's admin API (GET http://HOST:9200/admin/v1/nodes), "
        "a --nodes file, or --url repeated — and validate each one like `validate` does (throughput with a "
        "spot-check, then every golden nonce compared here), at most --concurrency at a time, each within its own "
        "--timeout: a dead or hostile node never holds the others. Writes one run bundle per node under "
        "OUT/nodes/ID/ and one fleet report (OUT/report.md, a self-contained OUT/report.html, OUT/fleet.json): "
        "per node verdict, mismatches, p-value, steady nonces/min against the profile's published figure and "
        "roofline, and its hardware with where that came from (its MLNode's GPU routes on the entry's poc_port, "
        "else --gpus / an entry's `gpus`, else the profile; never this machine's for a remote node); the fleet's "
        "total nonces/min over the nodes whose vectors passed (the others shown apart); outliers (vectors far from the other nodes', or speed far from "
        "the profile's or the fleet's). Ctrl-C or SIGTERM stops generation on every node, and every bundle and "
        "the report are still written.\n\n"
        "Which port: the Gonka vLLM PoC API (/api/v1/pow/...) is served by each node's vLLM, on its "
        "`inference_port` — the default. `--port-field poc_port` validates through the MLNode API on `poc_port` "
        "instead (--api mlnode; download and deploy are skipped: a fleet check never redeploys a node).\n\n"
        "exit codes: 0 every node passed; 1 some node FAILed (fraud); 2 no node FAILed but some node is "
        "INCOMPLETE or ERROR (or no node was validated)",
        formatter_class=Formatter,
    )
    src = p.add_argument_group("where the nodes are (any combination; at least one)")
    src.add_argument("--admin", default=None, metavar="URL",
                     help="the network node's admin API, e.g. http://HOST:9200 (GET /admin/v1/nodes)")
    src.add_argument("--nodes", default=None, metavar="FILE",
                     help="a JSON or YAML list of node URLs or admin-shaped entries ({id, host, inference_port, "
                     "poc_port, models}; an entry may also give `url`, `profile` and `gpus`, e.g. \"H100 x4\")")
    src.add_argument("--url", action="append", default=[], metavar="URL",
                     help="a node's URL (repeat for several); no discovery")
    src.add_argument("--port-field", choices=["inference_port", "poc_port"], default="inference_port",
                     help="which port of an admin entry to validate: inference_port (vLLM PoC API) or poc_port "
                     "(MLNode API)")
    src.add_argument("--api", choices=["vllm", "mlnode"], default=None,
                     help="the API the node URLs serve (default: vllm for inference_port, mlnode for poc_port)")
    g = p.add_mutually_exclusive_group()
    g.add_argument("--model", default=None,
                   help="model id; its reference is looked up in artifacts/, nodes that list other models are "
                   "skipped (default: each node's only listed model)")
    g.add_argument("--reference", default=None, metavar="FILE", help="reference JSON file, for every node")
    p.add_argument("--concurrency", type=int, default=16, help="nodes validated at the same time (threads)")
    p.add_argument("--batch-size", type=int, default=32, help="nonces per request (numerics depend on it)")
    p.add_argument("--timeout", type=float, default=300.0,
                   help="each node's own bound of every phase (as in `validate`)")
    p.add_argument("--connect-grace", type=float, default=30.0, metavar="S",
                   help="a node that refuses connections for this long ends its run")
    add_in_flight_arg(p)
    add_stop_on_exit_arg(p, "a node's")
    p.add_argument("--profile", default=None,
                   help="hardware profile for every node (an entry's `profile` wins): its published figure and roofline")
    add_gpus_arg(p, "every node's hardware (an entry's `gpus` wins; an admin entry's poc_port MLNode is asked first)")
    p.add_argument("--out", default=None, metavar="DIR",
                   help="fleet folder: report.md, report.html, fleet.json, nodes/ID/ (default: "
                   "mlvalidate-runs/fleet-<time>)")
    p.add_argument("--junit", default=None, metavar="FILE", help="also write JUnit XML: one test case per node")
    add_throughput_args(p, "the nodes")
    add_fresh_args(p, "fleet")
    add_stat_test_args(p)

    p.set_defaults(func=_run)  # SIGINT/SIGTERM: interrupts.handling_signals (cli.main)


def targets(args) -> list:
    from ..http_client import check_url
    from ..fleet import FleetError, discover_admin, load_nodes_file, target_from_entry, unique_ids

    if not (args.admin or args.nodes or args.url):
        raise MlvalidateError("say where the nodes are: --admin http://HOST:9200, --nodes FILE or --url URL",
                              "see mlvalidate fleet --help")
    found = []
    if args.admin:
        found += discover_admin(args.admin, args.port_field, api=args.api, timeout_s=min(args.timeout, 60.0))
    if args.nodes:
        found += load_nodes_file(args.nodes, args.port_field, api=args.api)
    for i, u in enumerate(args.url):
        check_url(u, "--url")
        found.append(target_from_entry(u, i, args.port_field, "--url", args.api))
    if not found:
        raise FleetError("no ML node found (the admin API and the node list are empty)",
                         "is any ML node registered with the network node?")
    return unique_ids(found)


def options(args):
    from ..fleet import FleetOptions
    from ..pipeline import StatOverrides

    throughput = node_run_options(args, **{"--concurrency": args.concurrency})
    if args.reference:  # one line before anything runs, not one error per node
        from ..artifacts import load_reference

        load_reference(args.reference)
    out = Path(args.out) if args.out else Path("mlvalidate-runs") / f"fleet-{_dt.datetime.now():%Y%m%d-%H%M%S}"
    return FleetOptions(reference=args.reference, model=args.model, batch_size=args.batch_size,
                        timeout_s=args.timeout, connect_grace_s=args.connect_grace, concurrency=args.concurrency,
                        profile=args.profile, throughput=throughput, in_flight=args.in_flight,
                        fresh=fresh_plan(args, "fleet"), stop_on_exit=args.stop_on_exit, gpus=gpus_option(args),
                        stat=StatOverrides(args.dist_threshold, args.p_mismatch, args.fraud_threshold), out=out)


def _run(args) -> int:
    from ..fleet import run_fleet

    opts = options(args)
    found = targets(args)
    print(f"fleet: {len(found)} node(s), at most {opts.concurrency} at a time, each within --timeout "
          f"{opts.timeout_s:g} s; bundles under {opts.out / 'nodes'}", flush=True)
    fleet = run_fleet(found, opts, echo=lambda m: print(m, flush=True))
    fresh = None
    if opts.fresh is not None:
        from ..fresh_fleet import cross_check

        fresh = cross_check(fleet, opts.fresh, log=lambda m: print(m, flush=True))
    return finish(fleet, opts.out, args.junit, fresh)


def finish(fleet, out: Path, junit=None, fresh: dict | None = None) -> int:
    """The fleet report (and JUnit), the per-node summary printed; the fleet's exit code. A
    signal while the report is written is held (interrupts.held): the fleet is then recorded as
    interrupted (never "every node passed") and the report written as such."""
    import sys

    with interrupts.held() as hold:
        try:
            paths = _write_report(fleet, out, junit, fresh)
            if hold.signal and not fleet.interrupted:
                fleet.interrupted = hold.signal
                paths = _write_report(fleet, out, junit, fresh)
        except OSError as e:
            print(f"error: could not write the fleet report to {out}: {e.strerror or e} — pass --out (and --junit) a "
                  "writable path", file=sys.stderr)
            return 2
        _print_summary(paths, fresh)
    return fleet.exit_code


def _write_report(fleet, out: Path, junit, fresh=None):
    from ..report.fleet_report import write_fleet_report
    from .compare import profile_or_none

    paths = write_fleet_report(fleet, out, profiles=profile_or_none, fresh=fresh)
    if junit:
        write_fleet_junit(junit, fleet)
    return paths


def _print_summary(paths, fresh=None) -> None:
    import json

    from ..report.fleet_report import fleet_headline

    summary = json.loads(paths["json"].read_text(encoding="utf-8"))
    print()
    print(f"FLEET: {fleet_headline(summary)}")
    width = max([len(n["id"]) for n in summary["nodes"]] + [4])
    for n in summary["nodes"]:
        rate = n["steady_nonces_per_min"]
        print(f"  {n['id']:<{width}}  {n['verdict']:<20}  "
              + (f"{n['n_mismatch']}/{n['n_total']} mismatches  " if n["n_total"] is not None else "")
              + (f"{rate:,.1f} nonces/min  " if rate is not None else "")
              + (f"fresh {fresh['nodes'][n['id']]['verdict']}  " if fresh and n["id"] in fresh["nodes"] else "")
              + (f"OUTLIER: {'; '.join(n['outlier'])}  " if n["outlier"] else "")
              + (f"— {n['error']}" if n["error"] else ""))
    if summary["fleet_nonces_per_min"] is not None:
        print(f"fleet         {summary['fleet_nonces_per_min']:,.1f} nonces/min over the {summary['nodes_counted']} "
              "node(s) whose vectors passed")
    for n in summary.get("not_counted") or []:
        print(f"              not counted: {n['id']} {n['steady_nonces_per_min']:,.1f} nonces/min ({n['verdict']})")
    print(f"report        {paths['html']} (and report.md, fleet.json)", flush=True)


def write_fleet_junit(path, fleet):
    from ..report.junit import write_junit
    from ..results import Phase, PhaseStatus

    status = {"PASS": PhaseStatus.PASS, "PASS-with-mismatches": PhaseStatus.PASS_WITH_MISMATCHES,
              "FAIL": PhaseStatus.FAIL, "INCOMPLETE": PhaseStatus.INCOMPLETE, "SKIPPED": PhaseStatus.SKIPPED}
    phases = [Phase(r.target.id, status.get(r.verdict, PhaseStatus.ERROR), round(r.wall_s, 3),
                    f"{r.verdict} ({r.target.url})" + (f": {r.error}" if r.error else "")) for r in fleet.results]
    # the nodes ran side by side: the suite's time is the fleet's wall time, not the sum of theirs
    return write_junit(path, "fleet", phases, {"nodes": len(fleet.results), "exit_code": fleet.exit_code},
                       time_s=round(fleet.wall_s, 3))
