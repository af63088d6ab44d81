"""mlvalidate pull: huggingface_hub against a real HTTP server on loopback (tests/fake_hub.py)
serving a tiny FP8 MiniMax-M2 in the released layout. Nothing here reaches the internet."""

import json
import os
import shutil
from collections import namedtuple

import pytest
from fake_hub import FakeHub

from mlvalidate.cli import main
from mlvalidate.hub import plan as plan_mod
from mlvalidate.hub.pin import RECORD_FILE, RECORD_SCHEMA, pinned_model
from mlvalidate.hub.plan import human_bytes
from mlvalidate.hub.pull import pull
from mlvalidate.errors import PullError

PIN_REPO, PIN_COMMIT = pinned_model()
SHARD1 = "model-00001-of-00002.safetensors"
SHARD2 = "model-00002-of-00002.safetensors"


@pytest.fixture
def hub(tiny_minimax_fp8, tmp_path, monkeypatch):
    """A started fake hub serving the tiny FP8 checkpoint as PIN_REPO @ PIN_COMMIT; HF_ENDPOINT
    points at it and huggingface_hub's cache is a fresh folder (the user's is never touched)."""
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hf-cache"))
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    with FakeHub.from_dir(tiny_minimax_fp8, PIN_REPO, PIN_COMMIT) as h:
        monkeypatch.setenv("HF_ENDPOINT", h.endpoint)
        yield h


def _pull(hub, dest, **kwargs):
    lines: list[str] = []
    result = pull(dest, endpoint=hub.endpoint, echo=lines.append, **kwargs)
    return result, lines


def _same_files(src, dest) -> None:
    names = sorted(p.name for p in src.iterdir() if p.is_file())
    assert names and names == sorted(p.name for p in dest.iterdir() if p.is_file() and not p.name.startswith("."))
    for name in names:
        assert (src / name).read_bytes() == (dest / name).read_bytes(), name


def _one_error_line(err: str) -> str:
    lines = [ln for ln in err.splitlines() if ln.startswith("error:")]
    assert len(lines) == 1, err
    assert " — " in lines[0] and "Traceback" not in err, err
    return lines[0]


def test_full_pull_is_byte_identical_recorded_and_verified(hub, tiny_minimax_fp8, tmp_path, capsys):
    dest = tmp_path / "weights"
    assert main(["pull", "--dir", str(dest)]) == 0
    out = capsys.readouterr().out
    _same_files(tiny_minimax_fp8, dest)

    record = json.loads((dest / RECORD_FILE).read_text())
    assert record["schema"] == RECORD_SCHEMA
    assert (record["repo"], record["commit"], record["endpoint"]) == (PIN_REPO, PIN_COMMIT, hub.endpoint)
    assert record["files"] == {p.name: p.stat().st_size for p in tiny_minimax_fp8.iterdir() if p.is_file()}
    assert record["bytes"] == sum(record["files"].values()) and record["elapsed_s"] >= 0
    assert record["started_at"] <= record["finished_at"]
    # every phase is announced, and the verify-weights checks ran on the result
    for phase in ("pull:", "listing:", "disk:", "download:", "check:", "verify:", "ok:", "done:"):
        assert any(line.startswith(phase) for line in out.splitlines()), (phase, out)
    # no Xet: every file came over /resolve, each exactly once and without a Range
    assert sorted(r[1].rsplit("/", 1)[1] for r in hub.gets()) == sorted(record["files"])
    assert all(r[2] is None for r in hub.gets())
    assert main(["verify-weights", str(dest)]) == 0


def test_connection_dropped_mid_file_is_resumed_with_a_range_request(hub, tiny_minimax_fp8, tmp_path, monkeypatch):
    from huggingface_hub import constants

    # http_get resumes from the last chunk it wrote; small chunks put several before the drop
    monkeypatch.setattr(constants, "DOWNLOAD_CHUNK_SIZE", 64 * 1024)
    hub.drop_once = {SHARD1}
    size = (tiny_minimax_fp8 / SHARD1).stat().st_size
    dest = tmp_path / "weights"
    _pull(hub, dest)
    _same_files(tiny_minimax_fp8, dest)
    gets = hub.gets(SHARD1)
    assert len(gets) == 2 and gets[0][2] is None, gets  # the dropped attempt, then the resume
    resumed_at = int(gets[1][2].removeprefix("bytes=").rstrip("-"))
    assert 0 < resumed_at <= size // 2 and resumed_at % (64 * 1024) == 0, gets


def test_rerun_after_an_interruption_fetches_only_what_is_missing(hub, tiny_minimax_fp8, tmp_path):
    dest = tmp_path / "weights"
    _pull(hub, dest)
    # what a killed run leaves: one shard not yet there, one cut short, and a partial download
    (dest / SHARD2).unlink()
    with open(dest / SHARD1, "r+b") as f:
        f.truncate(1000)
    partial = dest / ".cache/huggingface/download" / f"abc.{'0' * 64}.1234abcd.incomplete"
    partial.write_bytes(b"x" * 5000)
    os.utime(partial, (1, 1))  # untouched for long: its writer is gone
    hub.requests.clear()

    result, lines = _pull(hub, dest)
    _same_files(tiny_minimax_fp8, dest)
    assert sorted(r[1].rsplit("/", 1)[1] for r in hub.gets()) == [SHARD1, SHARD2]
    assert not partial.exists()
    text = "\n".join(lines)
    assert "removed 1 partial file(s)" in text and "6 already complete here, 2 to download" in text
    sizes = {n: (tiny_minimax_fp8 / n).stat().st_size for n in (SHARD1, SHARD2)}
    assert result.downloaded_bytes == sizes[SHARD1] + sizes[SHARD2]
    more = human_bytes(sizes[SHARD1] - 1000 + sizes[SHARD2])  # the cut file is deleted before its download
    assert f"{more} more on disk" in text

    hub.requests.clear()
    _, lines = _pull(hub, dest)  # complete: one listing request, nothing else
    assert [r[0] for r in hub.requests] == ["GET"] and not hub.gets()
    assert "8 already complete here, 0 to download" in "\n".join(lines)


@pytest.mark.parametrize("revision", ["main", "v1.0", "refs/pr/1", "d494266", PIN_COMMIT[:39], PIN_COMMIT + "0"])
def test_a_revision_that_is_not_a_full_commit_is_refused_before_any_request(hub, tmp_path, capsys, revision):
    dest = tmp_path / "weights"
    assert main(["pull", "--dir", str(dest), "--revision", revision]) == 2
    line = _one_error_line(capsys.readouterr().err)
    assert "full 40-hex commit" in line and PIN_COMMIT in line
    assert hub.requests == [] and not dest.exists()


def test_disk_space_preflight_refuses_before_the_first_byte(hub, tiny_minimax_fp8, tmp_path, capsys, monkeypatch):
    free = 5 * 2**20
    usage = namedtuple("usage", "total used free")
    monkeypatch.setattr(plan_mod.shutil, "disk_usage", lambda path: usage(10**12, 10**12 - free, free))
    dest = tmp_path / "weights"
    assert main(["pull", "--dir", str(dest)]) == 2
    line = _one_error_line(capsys.readouterr().err)
    files = sum(p.stat().st_size for p in tiny_minimax_fp8.iterdir())
    needed = files + plan_mod.HEADROOM_BYTES
    assert "not enough disk space" in line and f"needs {human_bytes(needed)}" in line
    assert f"{human_bytes(files)} to download" in line and "5.0 MiB free" in line
    assert f"free {human_bytes(needed - free)} there, or choose another --dir" in line
    assert hub.gets() == [] and not dest.exists()


def test_preflight_counts_only_bytes_still_missing(tiny_minimax_fp8, tmp_path):
    dest = shutil.copytree(tiny_minimax_fp8, tmp_path / "weights")
    files = [plan_mod.RemoteFile(p.name, p.stat().st_size) for p in sorted(tiny_minimax_fp8.iterdir())]
    # files of unknown provenance at the destination are replaced: their bytes are freed first
    plan = plan_mod.plan_pull(dest, PIN_REPO, PIN_COMMIT, files)
    assert plan.complete == [] and plan.remaining_bytes == 0 and plan.wrong_size == []
    (dest / SHARD2).unlink()
    plan = plan_mod.plan_pull(dest, PIN_REPO, PIN_COMMIT, files)
    assert plan.remaining_bytes == (tiny_minimax_fp8 / SHARD2).stat().st_size
    assert plan_mod.check_disk_space(plan)[0] == plan.remaining_bytes + plan_mod.HEADROOM_BYTES


def test_revision_not_on_the_hub_is_one_line_exit_2(hub, tmp_path, capsys):
    hub.not_found = True
    dest = tmp_path / "weights"
    assert main(["pull", "--dir", str(dest)]) == 2
    line = _one_error_line(capsys.readouterr().err)
    assert f"commit {PIN_COMMIT} of {PIN_REPO} was not found" in line and "--revision" in line
    assert hub.gets() == [] and not dest.exists()


def test_unreachable_hub_is_one_line_exit_2(tmp_path, capsys, monkeypatch):
    import socket

    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    monkeypatch.setenv("HF_ENDPOINT", f"http://127.0.0.1:{port}")
    assert main(["pull", "--dir", str(tmp_path / "weights")]) == 2
    line = _one_error_line(capsys.readouterr().err)
    assert "cannot reach" in line and "run mlvalidate pull again" in line


def test_other_repo_needs_an_explicit_commit(tmp_path):
    with pytest.raises(PullError, match="needs --revision"):
        pull(tmp_path / "w", repo="Qwen/Qwen3-0.6B", endpoint="http://127.0.0.1:9")


def test_the_default_pin_is_the_chain_definition():
    """MINIMAX_M2.md §1, read from configs/chain/minimaxai-minimax-m2.7.yaml."""
    assert pinned_model() == ("MiniMaxAI/MiniMax-M2.7", "d494266a4affc0d2995ba1fa35c8481cbd84294b")
