"""Verify a local checkpoint directory against its index, its config and the chain's pin.

    mlvalidate verify-weights DIR [--revision COMMIT] [--json]

`verify_weights` returns a `VerifyReport` listing every problem (not just the first); the
command (commands/verify_weights.py) prints it and exits 2 when there is any, 0 with a
one-line summary when there is none. Reads safetensors headers only, never tensor data, so
it takes seconds on the 230 GB MiniMax-M2.7 checkpoint.

1. index / shards / headers (`weights.checkpoint.scan_checkpoint`): every shard the index names
   is present with a header the safetensors library accepts (known dtypes, byte sizes that match
   the shapes, tensors tiling the file exactly — a truncated shard fails); every tensor of the
   index is in its shard, and no shard holds a tensor the index does not place there.
2. MiniMax-M2 only (model_type minimax_m2; other model types get step 1 and 3 and a note):
   every tensor's dtype and shape follow from config.json (docs/minimax-m2.md §3,
   `weights.layout.expected_minimax_m2`) —
   embed_tokens / lm_head BF16 [vocab, hidden]; q/k/v/o_proj from heads, kv heads, head_dim;
   experts w1/w3 [intermediate, hidden], w2 [hidden, intermediate]; with an fp8
   quantization_config each projection is F8_E4M3 plus F32 `weight_scale_inv`
   [ceil(out/b0), ceil(in/b1)] (b = weight_block_size), else BF16; router gate F32
   [experts, hidden]; e_score_correction_bias F32 [experts]; norms BF16, q_norm
   [heads*head_dim], k_norm [kv_heads*head_dim]. Tensors the config does not explain are
   problems, except `model.layers.{L}+` (MTP modules, L = num_hidden_layers).
3. commit: the commit the directory holds — from the pull record (.mlvalidate-pull.json), a
   huggingface cache snapshot path (.../snapshots/<commit>), or huggingface_hub's local_dir
   metadata (.cache/huggingface/download/*.metadata) — must be the chain's pin (hf_repo /
   hf_commit of configs/chain/minimaxai-minimax-m2.7.yaml) or --revision; every
   local_dir metadata file must name it too, and the non-shard files the pull recorded must
   still have their recorded sizes.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import CheckpointError, MlvalidateError
from ..weights.checkpoint import CONFIG_FILE, INDEX_FILE, SINGLE_FILE, CheckpointScan, read_config, scan_checkpoint
from ..weights.layout import beyond_layers, expected_minimax_m2
from .pin import RECORD_FILE, check_commit, local_dir_commit, pinned_model, read_pull_record

MINIMAX_M2 = "minimax_m2"
NO_RECORD = "nothing records which commit"  # the problem of a directory no download wrote
SNAPSHOT = "huggingface cache snapshot path"
_FULL_COMMIT = re.compile(r"[0-9a-f]{40}")


@dataclass
class VerifyReport:
    local_dir: Path
    expected_repo: str | None
    expected_commit: str
    model_type: str | None = None
    deep_checks: bool = False
    fp8_block: tuple[int, int] | None = None
    shards: int = 0
    tensors: int = 0
    shard_bytes: int = 0
    commit: str | None = None  # the commit the directory records
    commit_source: str | None = None
    repo: str | None = None  # the repo the directory records, when it does
    revision_given: bool = False  # expected_commit came from --revision, not the chain's pin
    mtp_tensors: int = 0
    problems: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems

    def to_json(self) -> dict:
        return {
            "schema": "mlvalidate.verify-weights/1",
            "ok": self.ok,
            "dir": str(self.local_dir),
            "expected": {"repo": self.expected_repo, "commit": self.expected_commit},
            "recorded": {"repo": self.repo, "commit": self.commit, "source": self.commit_source},
            "model_type": self.model_type,
            "deep_checks": self.deep_checks,
            "fp8_block": list(self.fp8_block) if self.fp8_block else None,
            "shards": self.shards,
            "tensors": self.tensors,
            "bytes": self.shard_bytes,
            "mtp_tensors_ignored": self.mtp_tensors,
            "problems": list(self.problems),
            "notes": list(self.notes),
            "next_step": None if self.ok else self.next_step(),
        }

    def next_step(self) -> str:
        """What to do about the problems, fitting this directory: `pull --dir DIR` only repairs a download
        of the repository expected here (it would put the chain's 229B checkpoint into anything else)."""
        where = str(self.local_dir)
        structural = [p for p in self.problems if not p.startswith(NO_RECORD)]
        if self.commit_source is None:  # make-tiny, bake's checkpoints, a conversion, a copy without its record
            checked = "index, shards, headers, dtypes and shapes" if self.deep_checks else "index, shards and headers"
            if not structural:
                return (f"{where} records no download (made here, e.g. by make-tiny, or copied without its "
                        f"{RECORD_FILE}): its {checked} are consistent, its commit cannot be checked; to check a "
                        "chain checkpoint, verify the directory `mlvalidate pull` (or huggingface_hub) wrote")
            return (f"{where} records no download, so `mlvalidate pull` cannot repair it: make it again where it "
                    "came from (a tiny checkpoint: `mlvalidate make-tiny DIR --force`; a copy: copy it again)")
        if self.expected_repo and self.repo and self.repo != self.expected_repo:
            return (f"{where} holds {self.repo}, not {self.expected_repo}: check it against its own download with "
                    f"`mlvalidate verify-weights {where} --revision {self.commit}`; {self.expected_repo} goes into a "
                    f"directory of its own (`mlvalidate pull`: models/{self.expected_repo.replace('/', '--')})")
        revision = f" --revision {self.expected_commit}" if self.revision_given else ""
        if self.commit_source == SNAPSHOT:  # files of huggingface's cache: links into its blob store
            return (f"{where} is a huggingface cache snapshot: download it again with huggingface_hub, or "
                    f"`mlvalidate pull{revision}` into a directory of its own, then verify that")
        return (f"run `mlvalidate pull --dir {where}{revision}` to fetch missing and wrong-size files and those "
                "of another commit (delete a damaged file first if its size is right), then verify again")


# ----------------------------------------------------------------------------------------
# MiniMax-M2: the tensors config.json implies
# ----------------------------------------------------------------------------------------
def _minimax_m2_problems(config: dict, scan: CheckpointScan, report: VerifyReport) -> list[str]:
    try:
        expected, block = expected_minimax_m2(config)
    except CheckpointError as e:
        report.notes.append("dtype and shape checks skipped: config.json does not describe a usable MiniMax-M2")
        return [str(e)]
    report.deep_checks, report.fp8_block = True, block
    num_layers = config["num_hidden_layers"]
    problems = []
    for name, (dtype, shape, what) in expected.items():
        if name not in scan.index:
            problems.append(f"tensor {name} ({what}) is not in {INDEX_FILE}")
            continue
        got = scan.headers.get(name)
        if got is not None and (got[0], tuple(got[1])) != (dtype, shape):
            problems.append(f"tensor {name} ({what}) is {got[0]} {list(got[1])}, expected {dtype} {list(shape)}")
    for name in scan.index:
        if name in expected:
            continue
        if beyond_layers(name, num_layers):
            report.mtp_tensors += 1
            continue
        problems.append(f"tensor {name} is not part of MiniMax-M2 as config.json describes it")
    if report.mtp_tensors:
        report.notes.append(f"{report.mtp_tensors} tensor(s) of model.layers.{num_layers}+ (MTP) are not checked")
    return problems


# ----------------------------------------------------------------------------------------
# commit
# ----------------------------------------------------------------------------------------
def _hf_cache_snapshot(root: Path) -> tuple[str, str | None] | None:
    """(commit, repo) when `root` is a huggingface cache snapshot: .../models--org--name/snapshots/<commit>."""
    real = root.resolve()
    if real.parent.name != "snapshots" or not _FULL_COMMIT.fullmatch(real.name):
        return None
    repo_folder = real.parent.parent.name
    repo = repo_folder[len("models--") :].replace("--", "/") if repo_folder.startswith("models--") else None
    return real.name, repo


def _commit_problems(root: Path, scan: CheckpointScan, report: VerifyReport) -> list[str]:
    problems: list[str] = []
    want = report.expected_commit
    try:
        record = read_pull_record(root)
    except MlvalidateError as e:
        problems.append(str(e))
        record = None
    except RecursionError:  # pin.read_pull_record catches ValueError only
        problems.append(f"pull record {root / RECORD_FILE} is unreadable: JSON nested too deeply")
        record = None

    weights = INDEX_FILE if (root / INDEX_FILE).is_file() else SINGLE_FILE
    files = [CONFIG_FILE, weights, *sorted(set(scan.index.values()))]
    meta = {f: c for f in dict.fromkeys(files) if (c := local_dir_commit(root, f)) is not None}

    if record is not None:
        report.commit, report.repo, report.commit_source = record["commit"], record["repo"], RECORD_FILE
        shards = set(scan.index.values())
        for path, size in sorted(record["files"].items()):
            if path in shards:
                continue  # shards are checked more precisely by their headers
            target = root / path
            got = target.stat().st_size if target.is_file() else None
            if got != size:
                problems.append(
                    f"{path} {'is missing' if got is None else f'has {got} bytes'}, the pull recorded {size} bytes"
                )
    elif (snap := _hf_cache_snapshot(root)) is not None:
        report.commit, report.repo = snap
        report.commit_source = SNAPSHOT
    elif meta:
        report.commit = meta.get(CONFIG_FILE) or next(iter(meta.values()))
        report.commit_source = "huggingface_hub local_dir metadata"
    else:
        problems.append(
            f"{NO_RECORD} {root} holds (no {RECORD_FILE}, not a huggingface cache snapshot, "
            "no .cache/huggingface download metadata)"
        )
        return problems

    if report.commit != want:
        problems.append(f"{root} holds commit {report.commit} ({report.commit_source}), expected {want}")
    if report.expected_repo and report.repo and report.repo != report.expected_repo:
        problems.append(f"{root} holds {report.repo} ({report.commit_source}), expected {report.expected_repo}")
    for path, commit in meta.items():
        if commit != want and commit != report.commit:  # a mismatch shared with report.commit is reported above
            problems.append(f"{path} was downloaded at commit {commit} (huggingface_hub metadata), expected {want}")
    return problems


# ----------------------------------------------------------------------------------------
# entry points
# ----------------------------------------------------------------------------------------
def verify_weights(
    model_dir: str | os.PathLike, revision: str | None = None, repo: str | None = None
) -> VerifyReport:
    """Check `model_dir` (see the module docstring); never stops at the first problem.
    The expected commit is `revision` (a full commit sha) or the chain's pin; the expected
    repo is `repo`, or the pin's repo when neither is given. Raises only for unusable
    arguments (a directory that does not exist, a revision that is not a commit)."""
    root = Path(model_dir)
    if not root.is_dir():
        raise CheckpointError(
            f"checkpoint directory {root} {'is not a directory' if root.exists() else 'does not exist'}",
            hint="pass the directory `mlvalidate pull` wrote (default models/MiniMaxAI--MiniMax-M2.7)",
        )
    if revision is not None:
        expected_commit, expected_repo = check_commit(revision), repo
    else:
        pin_repo, expected_commit = pinned_model()
        expected_repo = repo if repo is not None else pin_repo
    report = VerifyReport(local_dir=root, expected_repo=expected_repo, expected_commit=expected_commit,
                          revision_given=revision is not None)

    scan = scan_checkpoint(root)
    report.problems += scan.problems
    report.shards = len(set(scan.index.values()))
    report.tensors = len(scan.index)
    report.shard_bytes = sum(scan.shard_bytes.values())

    try:
        config = read_config(root)
    except CheckpointError as e:
        report.problems.append(str(e))
        config = None
    if config is not None:
        report.model_type = config.get("model_type") if isinstance(config.get("model_type"), str) else None
        if report.model_type == MINIMAX_M2:
            report.problems += _minimax_m2_problems(config, scan, report)
        else:
            report.notes.append(
                f"dtype and shape checks apply to MiniMax-M2 only; model_type {report.model_type!r} got the "
                "index, shard, header and commit checks"
            )
    report.problems += _commit_problems(root, scan, report)
    return report
