"""`mlvalidate config list|show|check`: per-hardware vLLM profiles.

The profiles, their rendering and their checks are serving's (profiles, render,
profile_check); this module prints them and turns check results into the exit code.
"""

from __future__ import annotations

from ..errors import MlvalidateError
from ._common import EXIT_ERROR, EXIT_PASS, Formatter


def register(sub) -> None:
    p = sub.add_parser(
        "config",
        help="per-hardware vLLM profiles: list, show, check",
        description="Per-hardware vLLM profiles (configs/<profile>/profile.yaml) built on the chain's model "
        "definition (configs/chain/<model>.yaml). A profile may add vLLM args but never drop or change a chain "
        "ModelArg. vLLM args, in order: the chain's ModelArgs, --revision <hf_commit>, --tensor-parallel-size, "
        "the profile's own args. PROFILE is a name under configs/ ($MLVALIDATE_CONFIGS) or a profile.yaml path.\n\n"
        "exit codes: list and show: 0 printed, 2 a profile cannot be read; check: see `config check --help` "
        "(0 only for clean chain deployments, 2 otherwise)",
        formatter_class=Formatter,
    )
    csub = p.add_subparsers(dest="config_command", metavar="SUBCOMMAND", required=True)

    lp = csub.add_parser(
        "list",
        help="the profiles under configs/",
        description="One line per profile under the configs folders (--configs DIR, $MLVALIDATE_CONFIGS, the "
        "shipped ones): its GPUs, tensor parallel size, chain model, PoC batch, published nonces/min (in total "
        "and per GPU) against the roofline ceiling per GPU (dense peak FLOP/s x 60 / FLOPs per nonce), and the "
        "share of that ceiling. Exit 2 when no profile is found.",
        formatter_class=Formatter,
    )

    def run_list(args) -> int:
        from ..serving.config_files import configs_dirs
        from ..serving.render import profile_summaries

        rows = profile_summaries()
        if not rows:
            raise MlvalidateError(f"no profile found in {', '.join(map(str, configs_dirs()))}",
                                  "pass --configs DIR (folders of <profile>/profile.yaml) or reinstall mlvalidate")
        print(list_text(rows))
        return EXIT_PASS

    lp.set_defaults(func=run_list)

    sp = csub.add_parser(
        "show",
        help="print a profile's vLLM args, merged YAML, node JSON or launch command",
        description="args: the exact vLLM argument list, one shell-quoted line. yaml: the profile merged with its "
        "chain definition. node-json: the network node's admin API body (POST /admin/v1/nodes). command: env "
        "vars + the full vLLM launch command.",
        formatter_class=Formatter,
    )
    sp.add_argument("profile", metavar="PROFILE",
                    help="a profile name under configs/ (see `config list`) or a profile.yaml path")
    sp.add_argument("--format", default="args", choices=["args", "yaml", "node-json", "command"],
                    help="what to print (see above)")
    sp.add_argument("--model", default=None, metavar="PATH_OR_ID",
                    help="command: the model to serve (default: the chain's hf_repo); node-json: model id of a "
                    "non-chain profile")  # fmt: skip
    sp.add_argument("--host", default=None,
                    help="node-json: how the network node reaches this ML node (default localhost); "
                    "command: the address vLLM binds (default 0.0.0.0)")  # fmt: skip
    sp.add_argument("--port", type=int, default=None, help="command: vLLM's port (default: the node's inference_port)")
    sp.add_argument("--server-cmd", default=None, metavar="CMD",
                    help="command: how to start vLLM, e.g. 'python -m vllm.entrypoints.openai.api_server' "
                    "(default 'vllm serve')")  # fmt: skip

    def run_show(args) -> int:
        from ..serving.render import show_profile

        print(show_profile(args.profile, args.format, model=args.model, host=args.host, port=args.port,
                           server_cmd=args.server_cmd))  # fmt: skip
        return EXIT_PASS

    sp.set_defaults(func=run_show)

    cp = csub.add_parser(
        "check",
        help="check profiles: chain args intact, PoC batch limits, vLLM's own parser and registries",
        description="Every profile's effective layout is printed first (tensor x pipeline parallel workers, expert "
        "parallelism, executor, CPU thread binding). Always: the chain's ModelArgs are all present and unchanged, --revision is the chain's "
        "commit, tensor x pipeline parallel = the layout's GPUs, --max-num-batched-tokens (where set) >= PoC batch "
        "x seq_len. When vLLM is importable: vLLM's CLI parser accepts the args, and the tool/reasoning parser "
        "and attention backend names are registered in vLLM. Exit 0 only when every profile is a chain "
        "deployment with no problem; 2 otherwise (a chain: null profile is never reported as passing). "
        "--node-config FILE checks a host's Gonka node-config.json instead: a chain ModelArg missing or changed is "
        "an ERROR (exit 2), a difference from the matching profile (--profile P, else the one with the entry's "
        "--tensor-parallel-size) a WARNING (exit 0 when there are only warnings).",
        formatter_class=Formatter,
    )
    cp.add_argument("profiles", nargs="*", metavar="PROFILE", help="default: every profile under configs/")
    cp.add_argument("--no-vllm", action="store_true", help="skip vLLM's parser even when vLLM is importable")
    cp.add_argument("--json", action="store_true", help="print the results as JSON")
    cp.add_argument("--node-config", default=None, metavar="FILE",
                    help="check a host's Gonka node-config.json instead: every arg that differs from the chain's "
                    "ModelArgs is an ERROR (exit 2), every one that differs from the matching profile a WARNING "
                    "(exit 0)")  # fmt: skip
    cp.add_argument("--profile", default=None, metavar="P",
                    help="with --node-config: the profile to compare with (default: the one whose "
                    "tensor_parallel_size is the entry's --tensor-parallel-size)")  # fmt: skip

    def run_check(args) -> int:
        import json

        if args.node_config is not None:
            return run_node_config(args)
        if args.profile is not None:
            raise MlvalidateError("--profile goes with --node-config", "list profiles to check as PROFILE arguments")
        from ..serving.profile_check import check_profiles

        results = check_profiles(args.profiles, use_vllm=not args.no_vllm)
        print(json.dumps([r.as_dict() for r in results], indent=2) if args.json else check_text(results))
        # only a clean chain deployment passes (a chain: null profile never does)
        return EXIT_PASS if all(r.clean for r in results) else EXIT_ERROR

    cp.set_defaults(func=run_check)


def run_node_config(args) -> int:
    """`config check --node-config FILE [--profile P]`: exit 2 on any error, 0 with warnings only."""
    import json

    from ..serving.node_config import check_node_config, node_config_text

    if args.profiles:
        raise MlvalidateError("--node-config checks a node-config file, not PROFILE arguments",
                              "name the profile to compare with by --profile P")  # fmt: skip
    check = check_node_config(args.node_config, profile=args.profile)
    print(json.dumps(check.as_dict(), indent=2) if args.json else node_config_text(check))
    return EXIT_ERROR if check.n_errors else EXIT_PASS


def check_text(results) -> str:
    """`config check`'s report: per profile its status, then FAIL / warn / ok / skip lines."""
    lines = []
    for r in results:
        where = f" ({r.path})" if r.path else ""
        lines.append(f"{r.profile}: {r.status}{where}")
        if r.layout:
            lines.append(f"  layout {r.layout}")
        lines += [f"  FAIL  {p}" for p in r.problems]
        lines += [f"  warn  {w}" for w in r.warnings]
        lines += [f"  ok    {p}" for p in r.passed]
        lines += [f"  skip  {s}" for s in r.skipped]
        if not r.is_chain and not r.problems:
            lines.append("  note  chain: null — the chain check does not apply, so this profile cannot pass it")
    n_ok = sum(r.clean for r in results)
    lines.append(f"{n_ok} of {len(results)} profile(s) pass the chain check")
    return "\n".join(lines)


def list_text(rows) -> str:
    """`config list`'s table: one line per profile, its throughput reference against the
    roofline ceiling (dense peak FLOP/s x 60 / FLOPs per nonce, docs/minimax-m2.md §5)."""

    def shown(v):
        return "-" if v is None else v

    out = [f"{'profile':<10} {'GPUs':<24} {'TP':>2}  {'chain':<24} {'batch':>5} {'nonces/min':>10} "
           f"{'per GPU':>7} {'ceiling/GPU':>11} {'of peak':>7}"]  # fmt: skip
    for r in rows:
        if r.error:
            out.append(f"{r.name:<10} error: {r.error}")
            continue
        ceiling = f"{r.ceiling_per_gpu:,.0f}" if r.ceiling_per_gpu else "-"
        rate = "none" if r.nonces_per_min is None and r.reference_note else shown(r.nonces_per_min)
        pct = f"{r.of_peak:.0f} %" if r.of_peak is not None else "-"
        out.append(
            f"{r.name:<10} {r.gpus:<24} {r.tensor_parallel_size:>2}  {r.chain:<24} {shown(r.batch):>5} "
            f"{rate:>10} {shown(r.nonces_per_min_per_gpu):>7} {ceiling:>11} {pct:>7}"
        )
    from ..shipped import cite

    notes = [f"{r.name}: {cite(r.reference_note)}" for r in rows if not r.error and r.nonces_per_min is None
             and r.reference_note]  # fmt: skip
    if notes:
        out += ["", "throughput reference:", *(f"  {n}" for n in notes)]
    return "\n".join(out)
