"""`mlvalidate config list|show|check`: per-hardware vLLM profiles."""

from __future__ import annotations

from ._common import EXIT_PASS, Formatter


def register(sub) -> None:
    p = sub.add_parser(
        "config",
        help="per-hardware vLLM profiles: list, show, check",
        description="Per-hardware vLLM profiles (configs/<profile>/profile.yaml) built on the chain's model "
        "definition (configs/chain/<model>.yaml). A profile may add vLLM args but never drop or change a chain "
        "ModelArg. vLLM args, in order: the chain's ModelArgs, --revision <hf_commit>, --tensor-parallel-size, "
        "the profile's own args. PROFILE is a name under configs/ ($MLVALIDATE_CONFIGS) or a profile.yaml path.",
        formatter_class=Formatter,
    )
    csub = p.add_subparsers(dest="config_command", metavar="SUBCOMMAND", required=True)

    lp = csub.add_parser("list", help="the profiles under configs/", formatter_class=Formatter)

    def run_list(args) -> int:
        from ..serving.profile_check import list_profiles_text

        print(list_profiles_text())
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
    sp.add_argument("profile", metavar="PROFILE")
    sp.add_argument("--format", default="args", choices=["args", "yaml", "node-json", "command"])
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
        from ..serving.profile_check import show_profile

        print(show_profile(args.profile, args.format, model=args.model, host=args.host, port=args.port,
                           server_cmd=args.server_cmd))  # fmt: skip
        return EXIT_PASS

    sp.set_defaults(func=run_show)

    cp = csub.add_parser(
        "check",
        help="check profiles: chain args intact, PoC batch limits, vLLM's own parser and registries",
        description="Always: the chain's ModelArgs are all present and unchanged, --revision is the chain's "
        "commit, tensor x pipeline parallel = the layout's GPUs, --max-num-batched-tokens (where set) >= PoC batch "
        "x seq_len. When vLLM is importable: vLLM's CLI parser accepts the args, and the tool/reasoning parser "
        "and attention backend names are registered in vLLM. Exit 0 only when every profile is a chain "
        "deployment with no problem; 2 otherwise (a chain: null profile is never reported as passing).",
        formatter_class=Formatter,
    )
    cp.add_argument("profiles", nargs="*", metavar="PROFILE", help="default: every profile under configs/")
    cp.add_argument("--no-vllm", action="store_true", help="skip vLLM's parser even when vLLM is importable")
    cp.add_argument("--json", action="store_true", help="print the results as JSON")

    def run_check(args) -> int:
        from ..serving.profile_check import run_config_check

        return run_config_check(args.profiles, use_vllm=not args.no_vllm, as_json=args.json)

    cp.set_defaults(func=run_check)
