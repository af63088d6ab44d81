"""mlvalidate verify-weights: every problem of a checkpoint directory, by name, on copies of
the tiny FP8 MiniMax-M2 (the session fixtures themselves are never modified)."""

import json
import shutil

import pytest
import torch
from safetensors.torch import load_file, save_file

from mlvalidate.cli import main
from mlvalidate.weights.checkpoint import INDEX_FILE, scan_checkpoint
from mlvalidate.hub.pin import RECORD_FILE, RECORD_SCHEMA, pinned_model
from mlvalidate.hub.verify import verify_weights
from mlvalidate.weights.layout import expected_minimax_m2

PIN_REPO, PIN_COMMIT = pinned_model()
OTHER_COMMIT = "0123456789abcdef0123456789abcdef01234567"
GATE = "model.layers.0.block_sparse_moe.gate.weight"
Q_SCALE = "model.layers.0.self_attn.q_proj.weight_scale_inv"


def _record(root, repo=PIN_REPO, commit=PIN_COMMIT) -> None:
    files = {p.name: p.stat().st_size for p in sorted(root.iterdir()) if p.is_file() and not p.name.startswith(".")}
    record = {"schema": RECORD_SCHEMA, "repo": repo, "commit": commit, "files": files}
    (root / RECORD_FILE).write_text(json.dumps(record))


@pytest.fixture
def ckpt(tiny_minimax_fp8, tmp_path):
    """A copy of the tiny FP8 checkpoint, recorded as pulled at the pin."""
    root = shutil.copytree(tiny_minimax_fp8, tmp_path / "ckpt")
    _record(root)
    return root


def _shard_of(root, tensor: str) -> str:
    return json.loads((root / INDEX_FILE).read_text())["weight_map"][tensor]


def _rewrite_shard(root, tensor: str, value=None) -> str:
    """Rewrite the shard holding `tensor` with it replaced by `value` (None: removed)."""
    shard = _shard_of(root, tensor)
    tensors = load_file(root / shard)
    if value is None:
        del tensors[tensor]
    else:
        tensors[tensor] = value
    save_file(tensors, root / shard, metadata={"format": "pt"})
    return shard


def _run(capsys, *argv):
    code = main(["verify-weights", *map(str, argv)])
    out, err = capsys.readouterr()
    return code, out, err


def _problems(out: str) -> list[str]:
    return [line[4:] for line in out.splitlines() if line.startswith("  - ")]


def test_clean_checkpoint_is_one_line_exit_0(ckpt, capsys):
    code, out, err = _run(capsys, ckpt)
    assert code == 0 and err == ""
    (line,) = out.splitlines()
    assert line.startswith(f"ok: {ckpt}: {PIN_REPO} @ {PIN_COMMIT[:12]}")
    headers = json.loads((ckpt / INDEX_FILE).read_text())["weight_map"]
    shard_bytes = sum((ckpt / s).stat().st_size for s in set(headers.values()))
    assert f"2 shards, {len(headers):,} tensors, {shard_bytes:,} bytes" in line
    assert "dtypes and shapes match config.json (MiniMax-M2, block-FP8 128x128)" in line


def test_missing_shard(ckpt, capsys):
    (ckpt / "model-00002-of-00002.safetensors").unlink()
    code, out, err = _run(capsys, ckpt)
    assert code == 2
    (problem,) = _problems(out)
    assert problem.startswith("shard model-00002-of-00002.safetensors is missing")
    (line,) = err.splitlines()
    assert line.startswith("error: 1 problem(s)") and "mlvalidate pull --dir" in line


def test_truncated_shard(ckpt, capsys):
    shard = ckpt / "model-00001-of-00002.safetensors"
    with open(shard, "r+b") as f:
        f.truncate(shard.stat().st_size - 100)
    code, out, _ = _run(capsys, ckpt)
    assert code == 2
    (problem,) = _problems(out)
    assert "model-00001-of-00002.safetensors" in problem and "truncated" in problem


def test_corrupted_header(ckpt, capsys):
    shard = ckpt / "model-00002-of-00002.safetensors"
    with open(shard, "r+b") as f:
        f.seek(8)
        f.write(b"\xff\xfe{{")  # the header's first bytes: no longer UTF-8 JSON
    code, out, _ = _run(capsys, ckpt)
    assert code == 2
    (problem,) = _problems(out)
    assert "model-00002-of-00002.safetensors" in problem and "unparseable safetensors header" in problem


def test_router_gate_stored_bf16(ckpt, capsys):
    gate = load_file(ckpt / _shard_of(ckpt, GATE))[GATE]
    _rewrite_shard(ckpt, GATE, gate.to(torch.bfloat16))
    code, out, _ = _run(capsys, ckpt)
    assert code == 2
    assert _problems(out) == [f"tensor {GATE} (router gate) is BF16 [8, 128], expected F32 [8, 128]"]


def test_wrong_scale_shape(ckpt, capsys):
    scale = load_file(ckpt / _shard_of(ckpt, Q_SCALE))[Q_SCALE]
    assert list(scale.shape) == [2, 1]  # q_proj [256, 128] in 128x128 blocks
    _rewrite_shard(ckpt, Q_SCALE, torch.ones(1, 1))
    code, out, _ = _run(capsys, ckpt)
    assert code == 2
    assert _problems(out) == [f"tensor {Q_SCALE} (q_proj scales) is F32 [1, 1], expected F32 [2, 1]"]


def test_tensor_missing_from_its_shard(ckpt, capsys):
    shard = _rewrite_shard(ckpt, GATE, None)
    code, out, _ = _run(capsys, ckpt)
    assert code == 2
    assert _problems(out) == [f"tensor {GATE} is not in {shard}, where the index places it"]


def test_commit_mismatch(ckpt, capsys):
    _record(ckpt, commit=OTHER_COMMIT)
    code, out, _ = _run(capsys, ckpt)
    assert code == 2
    assert _problems(out) == [f"{ckpt} holds commit {OTHER_COMMIT} ({RECORD_FILE}), expected {PIN_COMMIT}"]
    assert _run(capsys, ckpt, "--revision", OTHER_COMMIT)[0] == 0  # what the caller expects instead


def test_two_problems_at_once_are_both_listed(ckpt, capsys):
    (ckpt / "model-00001-of-00002.safetensors").unlink()
    _record(ckpt, commit=OTHER_COMMIT)  # the record does not list the missing shard: not a third problem
    code, out, err = _run(capsys, ckpt, "--json")
    assert code == 2 and "error: 2 problem(s)" in err
    report = json.loads(out)
    assert report["ok"] is False and len(report["problems"]) == 2, report["problems"]
    assert report["problems"][0].startswith("shard model-00001-of-00002.safetensors is missing")
    assert OTHER_COMMIT in report["problems"][1]
    assert report["recorded"] == {"repo": PIN_REPO, "commit": OTHER_COMMIT, "source": RECORD_FILE}


def test_every_problem_is_listed_not_just_the_first(ckpt, capsys):
    gate1 = GATE.replace("layers.0", "layers.1")
    for name in (GATE, gate1):
        _rewrite_shard(ckpt, name, load_file(ckpt / _shard_of(ckpt, name))[name].to(torch.bfloat16))
    code, out, _ = _run(capsys, ckpt)
    assert code == 2
    assert [p.split()[1] for p in _problems(out)] == [GATE, gate1]


def test_unlisted_and_foreign_tensors_are_problems_mtp_layers_are_not(ckpt, capsys):
    shard = _shard_of(ckpt, GATE)
    tensors = load_file(ckpt / shard)
    tensors["model.layers.0.self_attn.q_proj.weight_packed"] = torch.zeros(4, dtype=torch.int32)  # not in the index
    tensors["model.layers.4.eh_proj.weight"] = torch.zeros(2, 2, dtype=torch.bfloat16)  # an MTP layer (4 layers)
    tensors["model.extra.weight"] = torch.zeros(2, dtype=torch.bfloat16)
    save_file(tensors, ckpt / shard, metadata={"format": "pt"})
    index = json.loads((ckpt / INDEX_FILE).read_text())
    index["weight_map"]["model.layers.4.eh_proj.weight"] = shard
    index["weight_map"]["model.extra.weight"] = shard
    (ckpt / INDEX_FILE).write_text(json.dumps(index))
    _record(ckpt)  # the index changed size
    report = verify_weights(ckpt)
    assert report.problems == [
        f"{shard} holds tensor model.layers.0.self_attn.q_proj.weight_packed, which the index does not place there",
        "tensor model.extra.weight is not part of MiniMax-M2 as config.json describes it",
    ]
    assert report.mtp_tensors == 1 and any("MTP" in n for n in report.notes)


def test_commit_from_huggingface_local_dir_metadata_and_cache_snapshot(ckpt, tmp_path):
    (ckpt / RECORD_FILE).unlink()
    assert any("nothing records which commit" in p for p in verify_weights(ckpt).problems)
    meta = ckpt / ".cache/huggingface/download"
    meta.mkdir(parents=True)
    for name in ("config.json", INDEX_FILE, "model-00001-of-00002.safetensors", "model-00002-of-00002.safetensors"):
        (meta / f"{name}.metadata").write_text(f"{PIN_COMMIT}\netag\n1.0\n")
    report = verify_weights(ckpt)
    assert report.ok and report.commit_source == "huggingface_hub local_dir metadata", report.problems
    (meta / "model-00002-of-00002.safetensors.metadata").write_text(f"{OTHER_COMMIT}\netag\n1.0\n")
    assert verify_weights(ckpt).problems == [
        f"model-00002-of-00002.safetensors was downloaded at commit {OTHER_COMMIT} (huggingface_hub metadata), "
        f"expected {PIN_COMMIT}"
    ]
    snap = shutil.copytree(ckpt, tmp_path / "hub/models--MiniMaxAI--MiniMax-M2.7/snapshots" / PIN_COMMIT,
                           ignore=shutil.ignore_patterns(".cache"))  # fmt: skip
    report = verify_weights(snap)
    assert report.ok and (report.repo, report.commit) == (PIN_REPO, PIN_COMMIT), report.problems


def test_other_model_types_get_the_structural_checks_only(tiny_qwen3, tmp_path, capsys):
    root = shutil.copytree(tiny_qwen3, tmp_path / "qwen")
    _record(root, repo="Qwen/Qwen3-0.6B", commit=OTHER_COMMIT)
    code, out, _ = _run(capsys, root, "--revision", OTHER_COMMIT)
    assert code == 0
    assert out.splitlines()[0].endswith("index, shards and headers consistent")
    assert "apply to MiniMax-M2 only" in out.splitlines()[1]
    assert _run(capsys, root)[0] == 2  # against the chain's pin: another repo and commit


def test_usage_errors_are_one_line(tmp_path, capsys):
    code, _, err = _run(capsys, tmp_path / "nope")
    assert code == 2 and err.startswith("error: checkpoint directory") and len(err.splitlines()) == 1
    code, _, err = _run(capsys, tmp_path, "--revision", "main")
    assert code == 2 and "full 40-hex commit" in err


def test_expected_minimax_m2_matches_the_real_checkpoint_counts():
    """MINIMAX_M2.md §3: 96,103 tensors, q_proj [6144, 3072] / [48, 24], w2 [3072, 1536] / [24, 12]."""
    config = {"hidden_size": 3072, "vocab_size": 200064, "num_hidden_layers": 62, "num_attention_heads": 48,
              "num_key_value_heads": 8, "head_dim": 128, "intermediate_size": 1536, "num_local_experts": 256,
              "quantization_config": {"quant_method": "fp8", "weight_block_size": [128, 128]}}  # fmt: skip
    expected, block = expected_minimax_m2(config)
    assert block == (128, 128) and len(expected) == 96103
    q = "model.layers.0.self_attn.q_proj.weight"
    assert expected[q][:2] == ("F8_E4M3", (6144, 3072)) and expected[q + "_scale_inv"][:2] == ("F32", (48, 24))
    w2 = "model.layers.61.block_sparse_moe.experts.255.w2.weight"
    assert expected[w2][:2] == ("F8_E4M3", (3072, 1536)) and expected[w2 + "_scale_inv"][:2] == ("F32", (24, 12))
    assert expected["model.layers.3.self_attn.k_norm.weight"][:2] == ("BF16", (1024,))


def test_scan_checkpoint_agrees_with_tensor_headers_on_a_clean_checkpoint(tiny_minimax_fp8):
    from mlvalidate.weights.checkpoint import tensor_headers

    scan = scan_checkpoint(tiny_minimax_fp8)
    assert scan.problems == [] and scan.headers == tensor_headers(tiny_minimax_fp8)


# ---- the next step fits the directory in hand (issue 25, point 8) ------------------------------------
def _advice(err: str) -> str:
    (line,) = err.splitlines()
    assert line.startswith("error: ")
    return line


def test_a_make_tiny_checkpoint_is_never_told_to_pull_the_chains_model_into_it(tiny_minimax_fp8, tmp_path, capsys):
    """make-tiny writes no download record: `pull --dir` there would put the 229B checkpoint into it."""
    root = shutil.copytree(tiny_minimax_fp8, tmp_path / "tiny")
    code, out, err = _run(capsys, root)
    assert code == 2 and len(_problems(out)) == 1  # the commit cannot be checked; everything else is consistent
    line = _advice(err)
    assert "pull --dir" not in line and f"{root} records no download" in line
    assert "index, shards, headers, dtypes and shapes are consistent" in line
    (root / "model-00002-of-00002.safetensors").unlink()  # damaged: pull cannot repair what it never wrote
    code, _, err = _run(capsys, root)
    line = _advice(err)
    assert code == 2 and "pull --dir" not in line and "cannot repair it" in line and "make-tiny DIR --force" in line


def test_a_download_of_another_repository_is_checked_against_its_own_commit(tiny_qwen3, tmp_path, capsys):
    root = shutil.copytree(tiny_qwen3, tmp_path / "qwen")
    _record(root, repo="Qwen/Qwen3-0.6B", commit=OTHER_COMMIT)
    code, _, err = _run(capsys, root)
    line = _advice(err)
    assert code == 2 and "pull --dir" not in line and f"holds Qwen/Qwen3-0.6B, not {PIN_REPO}" in line
    assert f"`mlvalidate verify-weights {root} --revision {OTHER_COMMIT}`" in line
    assert _run(capsys, root, "--revision", OTHER_COMMIT)[0] == 0  # the advice works


def test_a_damaged_pull_is_told_to_pull_again_with_the_revision_asked_for(ckpt, capsys):
    (ckpt / "model-00002-of-00002.safetensors").unlink()
    code, out, err = _run(capsys, ckpt, "--json")
    assert code == 2 and json.loads(out)["next_step"].startswith(f"run `mlvalidate pull --dir {ckpt}`")
    _record(ckpt, commit=OTHER_COMMIT)
    code, _, err = _run(capsys, ckpt, "--revision", OTHER_COMMIT)
    assert code == 2 and f"`mlvalidate pull --dir {ckpt} --revision {OTHER_COMMIT}`" in _advice(err)


def test_a_huggingface_cache_snapshot_is_not_pulled_into(ckpt, tmp_path, capsys):
    snap = shutil.copytree(ckpt, tmp_path / "hub/models--MiniMaxAI--MiniMax-M2.7/snapshots" / OTHER_COMMIT,
                           ignore=shutil.ignore_patterns(RECORD_FILE))  # fmt: skip
    code, _, err = _run(capsys, snap)
    line = _advice(err)
    assert code == 2 and "huggingface cache snapshot" in line and f"--dir {snap}" not in line
