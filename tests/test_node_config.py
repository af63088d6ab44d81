"""`mlvalidate config check --node-config FILE`: a host's Gonka node-config.json against the
chain's ModelArgs (ERROR, exit 2) and the matching profile (WARNING, exit 0 when alone).

The node-configs here are typed from the documents (MINIMAX_M2.md §1, §4, §4.1; the admin API
shape in CHAIN_API.md), not from configs/ or the code's constants."""

import json

import pytest

from mlvalidate.cli import main

MODEL = "MiniMaxAI/MiniMax-M2.7"
COMMIT = "d494266a4affc0d2995ba1fa35c8481cbd84294b"
# MINIMAX_M2.md §1: the chain's ModelArgs
CHAIN = ["--enable-auto-tool-choice", "--max-model-len", "180000", "--kv-cache-dtype", "fp8",
         "--tool-call-parser", "minimax_m2", "--reasoning-parser", "minimax_m2_append_think"]  # fmt: skip
# MINIMAX_M2.md §4 (all layouts) + the H200 row + §4.1's --max-num-batched-tokens 32768
H200 = ["--revision", COMMIT, "--tensor-parallel-size", "2", "--max-num-seqs", "128",
        "--gpu-memory-utilization", "0.92", "--trust-remote-code", "--attention-backend", "FLASHINFER",
        "--moe-backend", "triton", "--max-num-batched-tokens", "32768"]  # fmt: skip


def entry(args, *, node_id="h200-node", model=MODEL):
    """One node entry in the admin API shape (CHAIN_API.md, last section; §4's node values)."""
    return {"id": node_id, "host": "10.0.0.7", "inference_port": 5000, "poc_port": 8080,
            "max_concurrent": 500, "models": {model: {"args": list(args)}}}  # fmt: skip


def write(tmp_path, doc, name="node-config.json"):
    path = tmp_path / name
    path.write_text(doc if isinstance(doc, str) else json.dumps(doc, indent=2))
    return str(path)


def replaced(args, flag, value):
    out = list(args)
    out[out.index(flag) + 1] = value
    return out


def test_node_config_as_documented_for_h200_is_clean(tmp_path, capsys):
    path = write(tmp_path, [entry(CHAIN + H200)])
    assert main(["config", "check", "--node-config", path, "--profile", "h200x2"]) == 0
    out = capsys.readouterr().out
    assert "ERROR" not in out and "WARN" not in out
    assert "0 error(s)" in out and "0 warning(s)" in out
    assert "profile: h200x2 — --profile h200x2" in out


def test_chain_arg_difference_is_an_error_exit_2(tmp_path, capsys):
    # §4.1: some node-configs use `--reasoning-parser minimax_m2`; the chain registers minimax_m2_append_think
    path = write(tmp_path, [entry(replaced(CHAIN, "--reasoning-parser", "minimax_m2") + H200)])
    assert main(["config", "check", "--node-config", path, "--profile", "h200x2"]) == 2
    out = capsys.readouterr().out
    errors = [ln for ln in out.splitlines() if ln.strip().startswith("ERROR")]
    assert len(errors) == 1
    assert "--reasoning-parser minimax_m2" in errors[0] and "minimax_m2_append_think" in errors[0]
    assert "1 error(s)" in out


def test_max_model_len_and_a_missing_chain_arg_are_errors(tmp_path, capsys):
    # §4.1: one H200 / some B200 versions carry --max-model-len 131072; the chain says 180000
    args = replaced(CHAIN, "--max-model-len", "131072")
    args.remove("--enable-auto-tool-choice")
    path = write(tmp_path, entry(args + H200))  # one entry, not a list
    assert main(["config", "check", "--node-config", path, "--profile", "h200x2", "--json"]) == 2
    rep = json.loads(capsys.readouterr().out)
    errs = rep["entries"][0]["errors"]
    assert rep["errors"] == 2 and rep["warnings"] == 0
    assert any("--max-model-len 131072" in e and "180000" in e for e in errs)
    assert any(e.startswith("--enable-auto-tool-choice missing") for e in errs)


def test_layout_difference_alone_is_a_warning_exit_0(tmp_path, capsys):
    # §4.1 H200: --gpu-memory-utilization 0.95, an operator choice
    path = write(tmp_path, [entry(CHAIN + replaced(H200, "--gpu-memory-utilization", "0.95"))])
    assert main(["config", "check", "--node-config", path, "--profile", "h200x2"]) == 0
    out = capsys.readouterr().out
    warns = [ln for ln in out.splitlines() if ln.strip().startswith("WARN")]
    assert len(warns) == 1 and "--gpu-memory-utilization 0.95" in warns[0] and "0.92" in warns[0]
    assert "operator choice" in warns[0] and "0 error(s)" in out and "1 warning(s)" in out
    assert main(["config", "check", "--node-config", path, "--profile", "h200x2", "--json"]) == 0
    rep = json.loads(capsys.readouterr().out)
    assert rep["errors"] == 0 and rep["warnings"] == 1 and rep["entries"][0]["profile"] == "h200x2"


def test_gonka_h200_node_config_of_section_4_1(tmp_path, capsys):
    """The newest H200 file as §4.1 describes it: chain args intact, five operator choices."""
    extra = ["--scheduling-policy", "priority", "--gpu-memory-utilization", "0.95", "--max-num-seqs", "608",
             "--compilation-config", '{"max_cudagraph_capture_size": 608}']  # fmt: skip
    args = CHAIN + [a for a in H200 if a not in ("--max-num-seqs", "128", "--gpu-memory-utilization", "0.92")]
    path = write(tmp_path, [entry(args + extra)])
    assert main(["config", "check", "--node-config", path, "--profile", "h200x2", "--json"]) == 0
    e = json.loads(capsys.readouterr().out)["entries"][0]
    assert e["errors"] == []
    flagged = " | ".join(e["warnings"])
    for flag in ("--scheduling-policy", "--gpu-memory-utilization 0.95", "--max-num-seqs 608", "--compilation-config"):
        assert flag in flagged


def test_profile_chosen_by_tensor_parallel_size(tmp_path, capsys):
    # §4: 8x A100 as one TP-8 instance with --enable-expert-parallel; A100 has marlin + §4.1's 32768
    a100 = ["--revision", COMMIT, "--tensor-parallel-size", "8", "--max-num-seqs", "128",
            "--gpu-memory-utilization", "0.92", "--trust-remote-code", "--enable-expert-parallel",
            "--moe-backend", "marlin", "--max-num-batched-tokens", "32768"]  # fmt: skip
    path = write(tmp_path, [entry(CHAIN + a100, node_id="a100-8")])
    assert main(["config", "check", "--node-config", path]) == 0
    out = capsys.readouterr().out
    assert "profile: a100x8 — --tensor-parallel-size 8: the only profile with TP 8" in out
    assert "note  profile a100x8 sets env VLLM_USE_FLASHINFER_MOE_FP8=0" in out  # node-configs carry no env


def test_ambiguous_tensor_parallel_size_asks_with_the_list(tmp_path, capsys):
    path = write(tmp_path, [entry(CHAIN + H200)])
    assert main(["config", "check", "--node-config", path]) == 2
    out = capsys.readouterr().out
    assert "ambiguous — --tensor-parallel-size 2 matches b200x2, h200x2" in out
    assert "--profile b200x2|h200x2" in out
    assert "chain ModelArgs: all 5 present and unchanged" in out  # the chain args are still compared


@pytest.mark.parametrize(
    "content, says",
    [
        (None, "cannot read node-config"),
        ("[{not json", "is not JSON"),
        ('[{"id": "x", "host": "h"}]', "is not a node entry with a `models` object"),
        (json.dumps([entry(["--max-num-seqs", "128"], model="Qwen/Qwen3-235B")]), "no entry serves MiniMaxAI/MiniMax-M2.7"),
    ],
)
def test_unusable_node_config_is_one_line_exit_2(tmp_path, capsys, content, says):
    path = str(tmp_path / "missing.json") if content is None else write(tmp_path, content)
    assert main(["config", "check", "--node-config", path]) == 2
    cap = capsys.readouterr()
    err = cap.err.strip()
    assert says in err and "\n" not in err and cap.out == ""


def test_node_config_option_combinations(tmp_path, capsys):
    path = write(tmp_path, [entry(CHAIN + H200)])
    assert main(["config", "check", "h200x2", "--node-config", path]) == 2
    assert "--node-config checks a node-config file" in capsys.readouterr().err
    assert main(["config", "check", "--profile", "h200x2"]) == 2
    assert "--profile goes with --node-config" in capsys.readouterr().err
