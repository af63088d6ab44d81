"""What `config show` and `config list` say about profiles, as text or rows.

`show_profile` renders one profile as its vLLM argument line, its merged YAML, the network
node's admin JSON or the full launch command; `profile_summaries` gives one row per profile
with its throughput reference against the roofline (the command lays the rows out).
"""

from __future__ import annotations

import json
import shlex
from dataclasses import dataclass

import yaml

from ..errors import MlvalidateError
from .config_files import ProfileError
from .profiles import list_profiles, load_profile

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


@dataclass(frozen=True)
class ProfileSummary:
    """One `config list` row; `error` set (and the rest empty) when the profile does not load."""

    name: str
    gpus: str = "-"  # "4x NVIDIA A100 80GB"
    tensor_parallel_size: int | None = None
    chain: str = "(not a chain deployment)"
    batch: int | None = None  # the throughput reference's PoC batch
    nonces_per_min: float | None = None  # the throughput reference, per instance
    nonces_per_min_per_gpu: float | None = None
    ceiling_per_gpu: float | None = None  # dense peak FLOP/s x 60 / FLOPs per nonce
    reference_note: str | None = None  # e.g. "no published figure ..." where the rate is null
    error: str | None = None

    @property
    def of_peak(self) -> float | None:
        """The reference's share of the roofline ceiling, in %."""
        if self.nonces_per_min_per_gpu and self.ceiling_per_gpu:
            return 100 * self.nonces_per_min_per_gpu / self.ceiling_per_gpu
        return None


def profile_summaries() -> list[ProfileSummary]:
    """`config list`: one row per profile under configs/, with its throughput reference against
    the roofline (dense peak FLOP/s x 60 / FLOPs per nonce, docs/minimax-m2.md §5)."""
    rows = []
    for name in list_profiles():
        try:
            p = load_profile(name)
        except ProfileError as e:
            rows.append(ProfileSummary(name, error=e.one_line()))
            continue
        ref = p.throughput_reference or {}
        per_gpu = ref.get("nonces_per_min_per_gpu")
        if per_gpu is None and ref.get("nonces_per_min") and p.gpu_count:
            per_gpu = ref["nonces_per_min"] * p.instances_per_host / p.gpu_count
        rows.append(ProfileSummary(
            name=name,
            gpus=f"{p.gpu_count}x {p.gpu_model}" if p.gpu_model else "-",
            tensor_parallel_size=p.tensor_parallel_size,
            chain=p.chain.id if p.chain else "(not a chain deployment)",
            batch=ref.get("batch"),
            nonces_per_min=ref.get("nonces_per_min"),
            nonces_per_min_per_gpu=per_gpu,
            ceiling_per_gpu=p.roofline_nonces_per_min_per_gpu(),
            reference_note=ref.get("note"),
        ))  # fmt: skip
    return rows
