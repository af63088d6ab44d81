"""--fresh N and --against, shared by `validate`, `run` and `fleet`: the options and their checks
(one line, before anything runs)."""

from __future__ import annotations

from ..errors import MlvalidateError

AGAINST_FLAGS = ("against", "against_model", "against_profile")


def add_fresh_args(p, command: str) -> None:
    g = p.add_argument_group("fresh challenge (a node that replays the public golden vectors passes the golden "
                             "phase; this catches it)")
    fleet = command == "fleet"
    g.add_argument("--fresh", type=int, default=None, metavar="N",
                   help="after the golden phase, draw a block hash and public key never sent before (the OS CSPRNG) and "
                   "N random nonces from [0, 2^63), ask " + ("every node (the same challenge for all)" if fleet else
                   "the node") + " for their vectors exactly as the golden phase asks (same chunks, queue and intake "
                   "rule; at most N / --batch-size more requests), and check them under the golden gate and binomial "
                   "test " + ("pair by pair: a node that disagrees with the majority of 3 or more is FAIL, 2 that "
                   "disagree are INCOMPLETE (cannot tell which)" if fleet else "against --against") + ". The verdict "
                   "is the worse of the two phases; the bundle keeps the challenge and both sides' vectors (fresh/)")
    g.add_argument("--against", default=None, metavar="URL|inprocess|reference",
                   help=("optional: one trusted computation that outvotes the nodes; " if fleet else "required with "
                   "--fresh: ") + "a node you trust (its URL, --against-api), 'inprocess' (stock vLLM in this "
                   "process with --against-profile and --against-model, the `run` engine)"
                   + (" — not for `run`, whose node it is" if command == "run" else "")
                   + ", or 'reference' (the reference engine on --against-model; small models)")
    g.add_argument("--against-api", choices=["vllm", "mlnode"], default="vllm",
                   help="the API the --against URL serves (as --api for --url)")
    g.add_argument("--against-model", default=None, metavar="DIR",
                   help="the checkpoint directory of --against inprocess/reference"
                   + ("; without it, --model" if command == "run" else ""))
    g.add_argument("--against-profile", default=None, metavar="P",
                   help="--against inprocess: the profile (name or YAML) whose engine args start vLLM here")
    g.add_argument("--against-dtype", choices=["fp32", "bf16"], default="fp32",
                   help="--against reference: the reference engine's dtype")


def fresh_plan(args, command: str):
    """The FreshPlan the arguments ask for, or None without --fresh."""
    from ..http_client import check_url
    from ..fresh import FleetChallenges, FreshPlan, TrustedSpec, check_trusted
    from ..poc.fresh import MAX_NONCES

    if args.fresh is None:
        given = [f"--{f.replace('_', '-')}" for f in AGAINST_FLAGS if getattr(args, f)]
        if given:
            raise MlvalidateError(f"{', '.join(given)}: only with --fresh N", "add --fresh 32, say")
        return None
    if not 1 <= args.fresh <= MAX_NONCES:
        raise MlvalidateError(f"--fresh must be 1..{MAX_NONCES}, got {args.fresh}", "32 or 64 is a good spot-check")
    if getattr(args, "skip_validate", False):
        raise MlvalidateError("--fresh with --skip-validate: the fresh challenge follows the golden phase",
                              "drop one of them")
    against = args.against
    if against is None and command != "fleet":
        raise MlvalidateError("--fresh N needs --against URL|inprocess|reference: what the fresh vectors are checked "
                              "against", "e.g. --against reference --against-model DIR")
    spec = None
    timeout, grace = getattr(args, "timeout", 300.0), getattr(args, "connect_grace", 30.0)
    if against in ("inprocess", "reference"):
        if command == "run" and against == "inprocess":
            raise MlvalidateError("run --against inprocess would check this vLLM against itself",
                                  "use --against reference (the reference engine) or a trusted node's URL")
        if command == "fleet" and not (args.model or args.reference):
            raise MlvalidateError(f"fleet --against {against} needs --model ID or --reference FILE",
                                  "the trusted side computes one model's challenge")
        if against == "reference":
            from ._common import require_extra

            require_extra("reference", f"{command} --against reference")
        model_dir = args.against_model or (args.model if command == "run" else None)
        spec = TrustedSpec(against, model_dir=model_dir, profile=args.against_profile, dtype=args.against_dtype,
                           timeout_s=timeout, connect_grace_s=grace)
    elif against is not None:
        try:
            url = check_url(against, "--against")
        except MlvalidateError as e:
            raise MlvalidateError(str(e), "give a trusted node's http(s):// URL, 'inprocess' or 'reference'") from None
        spec = TrustedSpec("url", url=url, api=args.against_api, timeout_s=timeout, connect_grace_s=grace,
                           in_flight=getattr(args, "in_flight", 4))
    if spec is not None:
        check_trusted(spec)
    return FreshPlan(n=args.fresh, against=spec, fleet=FleetChallenges() if command == "fleet" else None)
