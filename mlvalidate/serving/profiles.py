"""Per-hardware vLLM profiles on top of the chain's model definition.

Two kinds of YAML under `configs/` (override the folder with $MLVALIDATE_CONFIGS):

* `configs/chain/<model>.yaml` — the model as the chain defines it, kept once: hub repo and
  commit, the chain's ModelArgs (vLLM args every host must pass, unchanged), PoC params,
  stat test, and the weight facts used to size VRAM. Loaded as a `ChainModel`.
* `configs/<profile>/profile.yaml` — one hardware layout (GPU model and count, tensor
  parallelism, the layout's extra vLLM args and env vars, node-config values, the published
  throughput reference). `chain: <model>` names the chain definition it builds on; a profile
  with `chain: null` is not a chain deployment (e.g. a tiny model on CPU vLLM for tests).

Merge rule: a profile can ADD vLLM args but never drop or change a chain ModelArg. The
effective argument list (`Profile.vllm_args()`) is, in this order:

    1. the chain's ModelArgs, verbatim, in the chain's order
    2. --revision <hf_commit>                 (pinned by the chain)
    3. --tensor-parallel-size <tensor_parallel_size>
       --pipeline-parallel-size <pipeline_parallel_size>   (only when the field is written)
    4. the profile's own args, in the profile's order

A profile arg that repeats one of 1-3 with the same value is dropped (no duplicates); one that
sets it to another value, negates it (`--no-X`) or gives a boolean chain flag a value is a
`ProfileError` naming the flag. `--flag value`, `--flag=value`, `--flag_name` spellings and
the `-tp` / `-pp` short forms are recognised. A non-chain profile's vllm_args() is its own
args after the layout fields it writes (`tensor_parallel_size:`, `pipeline_parallel_size:`),
under the same rule: a layout field is never ignored, and args that contradict it are refused.
Where a profile writes no layout field, the fields hold what its args set (default 1), so
`tensor_parallel_size` and `pipeline_parallel_size` are always the layout vLLM gets.
`nodes:` (default 1) is how many machines one instance spans (vLLM's Ray executor): the GPUs
of one machine are gpu_count / nodes.

The argument-list rules live in serving.vllm_flags, the chain definition in
serving.chain_model, the configs folder and strict YAML reading in serving.config_files.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .chain_model import ChainModel, find_chain, load_chain, str_list
from .config_files import (
    CHAIN_DIR,
    PROFILE_FILE,
    Fields,
    ProfileError,
    configs_dirs,
    read_yaml,
)
from .vllm_flags import flag_value, merge_args, parse_flags

# node-config values every Gonka layout uses unless the profile says otherwise
NODE_DEFAULTS = {"max_concurrent": 500, "inference_port": 5000, "poc_port": 8080}
DEFAULT_POC_BATCH = 32  # when a profile names neither a PoC batch nor a throughput reference
DEFAULT_SEQ_LEN = 1024  # PoC seq_len for a non-chain profile that does not set one


@dataclass
class Profile:
    """One hardware layout (configs/<name>/profile.yaml), merged with its chain definition."""

    name: str
    chain: ChainModel | None
    gpu_model: str | None
    gpu_count: int
    gpu_memory_gib: float | None
    tensor_parallel_size: int
    instances_per_host: int
    args: list[str]  # the layout's own vLLM args (not merged)
    env: dict[str, str]
    throughput_reference: dict | None
    peak_tflops: float | None
    node: dict
    gpu_name_pattern: str | None = None  # regex on the NVML device name
    poc_batch: int | None = None  # PoC batch this layout runs (default: the throughput reference's)
    model: str | None = None  # model id for a non-chain profile (a chain profile uses the chain's)
    path: Path | None = None
    pipeline_parallel_size: int = 1
    nodes: int = 1  # machines one instance spans (Ray); GPUs per machine = gpu_count / nodes
    layout_fields: tuple[str, ...] = ()  # the layout fields the file writes (they pin their flags)

    @property
    def is_chain(self) -> bool:
        return self.chain is not None

    @property
    def model_id(self) -> str | None:
        return self.chain.model_id if self.chain else self.model

    def _layout_args(self) -> list[str]:
        """--tensor-parallel-size (always for a chain profile) and --pipeline-parallel-size from
        the layout fields the profile writes."""
        out = []
        if self.chain is not None or "tensor_parallel_size" in self.layout_fields:
            out += ["--tensor-parallel-size", str(self.tensor_parallel_size)]
        if "pipeline_parallel_size" in self.layout_fields:
            out += ["--pipeline-parallel-size", str(self.pipeline_parallel_size)]
        return out

    def pinned_args(self) -> list[str]:
        """Steps 1-3 of the merge order: chain ModelArgs, --revision, the layout fields."""
        if self.chain is None:
            return self._layout_args()
        return [*self.chain.model_args, "--revision", self.chain.hf_commit, *self._layout_args()]

    def vllm_args(self) -> list[str]:
        """The exact vLLM argument list (module docstring: order and merge rule)."""
        owner = {"--tensor-parallel-size": "the profile's tensor_parallel_size field",
                 "--pipeline-parallel-size": "the profile's pipeline_parallel_size field"}
        if self.chain is not None:
            owner.update({f.name: f"the chain's ModelArgs ({self.chain.id})" for f in parse_flags(self.chain.model_args)})
            owner["--revision"] = f"the chain's hf_commit ({self.chain.id})"
        return merge_args(self.pinned_args(), self.args, source=f"profile {self.name}", owner=owner)

    def effective_batch(self) -> int:
        """PoC batch: the profile's poc batch, else its throughput reference's, else 32."""
        if self.poc_batch:
            return int(self.poc_batch)
        if self.throughput_reference and self.throughput_reference.get("batch"):
            return int(self.throughput_reference["batch"])
        return DEFAULT_POC_BATCH

    def seq_len(self) -> int:
        return self.chain.seq_len if self.chain else DEFAULT_SEQ_LEN

    def serve_command(self, model: str, *, port: int = 5000, host: str = "0.0.0.0",
                      server_cmd: list[str] | None = None) -> list[str]:  # fmt: skip
        """The full command line that starts vLLM for this profile.

        Default `vllm serve MODEL --host H --port P ...vllm_args()`. A server command that does
        not end in the `serve` subcommand (e.g. `[sys.executable, "-m",
        "vllm.entrypoints.openai.api_server"]`) gets the model as `--model MODEL`."""
        cmd = list(server_cmd) if server_cmd else ["vllm", "serve"]
        cmd += [model] if cmd[-1] == "serve" else ["--model", model]
        return cmd + ["--host", host, "--port", str(port), *self.vllm_args()]

    def node_json(self, host: str, *, node_id: str | None = None, model_id: str | None = None) -> dict:
        """The network node's admin API body (POST /admin/v1/nodes) for one ML node of this layout."""
        mid = model_id or self.model_id
        if not mid:
            raise ProfileError(
                f"profile {self.name} names no model (chain: null and no `model:`)",
                "add `model: <id>` to the profile, or pass a model id",
            )
        node = {**NODE_DEFAULTS, **self.node}
        return {
            "id": node_id or str(node.get("id") or self.name),
            "host": host,
            "inference_port": int(node["inference_port"]),
            "poc_port": int(node["poc_port"]),
            "max_concurrent": int(node["max_concurrent"]),
            "models": {mid: {"args": self.vllm_args()}},
        }

    def roofline_nonces_per_min_per_gpu(self) -> float | None:
        """Ceiling at dense peak: peak FLOP/s x 60 / FLOPs per nonce (docs/minimax-m2.md §5)."""
        if not (self.peak_tflops and self.chain and self.chain.flops_per_nonce):
            return None
        return self.peak_tflops * 1e12 * 60 / self.chain.flops_per_nonce

    def as_dict(self) -> dict[str, Any]:
        """The merged view (`config show --format yaml`): the chain inline, the effective args last."""
        return {
            "name": self.name,
            "path": str(self.path) if self.path else None,
            "chain": self.chain.as_dict() if self.chain else None,
            "model": self.model_id,
            "gpu_model": self.gpu_model, "gpu_name_pattern": self.gpu_name_pattern, "gpu_count": self.gpu_count,
            "gpu_memory_gib": self.gpu_memory_gib, "tensor_parallel_size": self.tensor_parallel_size,
            "pipeline_parallel_size": self.pipeline_parallel_size, "nodes": self.nodes,
            "instances_per_host": self.instances_per_host,
            "poc_batch": self.effective_batch(),
            "args": list(self.args), "env": dict(self.env), "node": {**NODE_DEFAULTS, **self.node},
            "throughput_reference": self.throughput_reference, "peak_tflops": self.peak_tflops,
            "vllm_args": self.vllm_args(),
        }  # fmt: skip



def list_profiles() -> list[str]:
    """Names of the profiles in the configs folders (folders holding a profile.yaml), sorted."""
    names = set()
    for d in configs_dirs():
        if d.is_dir():
            names |= {p.name for p in d.iterdir() if p.name != CHAIN_DIR and (p / PROFILE_FILE).is_file()}
    return sorted(names)


_PROFILE_KEYS = {"name", "chain", "model", "gpu_model", "gpu_name_pattern", "gpu_count", "gpu_memory_gib",
                 "tensor_parallel_size", "pipeline_parallel_size", "nodes", "instances_per_host", "args", "env",
                 "node", "poc", "throughput_reference", "peak_tflops"}  # fmt: skip


_TREF_KEYS = {"batch", "nonces_per_min", "nonces_per_min_per_gpu", "note"}


def _throughput_reference(tref: dict | None, path: Path) -> dict | None:
    """`throughput_reference:` checked: batch an integer >= 1; the rates positive numbers or null
    (null, or left out, with a `note` such as "no published figure" where none is published)."""
    if tref is None:
        return None
    unknown = sorted(set(tref) - _TREF_KEYS)
    if unknown:
        raise ProfileError(f"profile {path}: unknown throughput_reference key(s) {', '.join(unknown)}",
                           f"known: {', '.join(sorted(_TREF_KEYS))}")  # fmt: skip
    b = tref.get("batch")
    if b is not None and (isinstance(b, bool) or not isinstance(b, int) or b < 1):
        raise ProfileError(f"profile {path}: throughput_reference.batch must be an integer >= 1", "fix the file")
    for k in ("nonces_per_min", "nonces_per_min_per_gpu"):
        v = tref.get(k)
        if v is not None and (isinstance(v, bool) or not isinstance(v, (int, float)) or v <= 0):
            raise ProfileError(f"profile {path}: throughput_reference.{k} must be a positive number or null",
                               'write null and a `note: "no published figure"` where none is published')  # fmt: skip
    if "note" in tref and not isinstance(tref["note"], str):
        raise ProfileError(f"profile {path}: throughput_reference.note must be text", "quote it")
    return dict(tref)


def _find_profile(name_or_path: str) -> Path:
    p = Path(name_or_path)
    if p.is_file():
        return p
    if p.is_dir() and (p / PROFILE_FILE).is_file():
        return p / PROFILE_FILE
    if p.suffix in (".yaml", ".yml") or os.sep in name_or_path:
        raise ProfileError(f"profile file {name_or_path} not found", "check the path")
    for d in configs_dirs():
        if (d / name_or_path / PROFILE_FILE).is_file():
            return d / name_or_path / PROFILE_FILE
    known = list_profiles()
    raise ProfileError(
        f"no profile {name_or_path!r} in {', '.join(map(str, configs_dirs()))}",
        f"known profiles: {', '.join(known) or 'none'} (or pass a profile.yaml path)",
    )


def load_profile(name_or_path: str | os.PathLike) -> Profile:
    """A profile by name (a folder in the configs folders) or a path to its YAML (or its folder).

    The merge rule is checked here: a profile that would drop or change a chain arg raises."""
    path = _find_profile(str(name_or_path))
    doc = read_yaml(path, "profile")
    f = Fields(doc, path, "profile", _PROFILE_KEYS)
    if "chain" not in doc:
        raise ProfileError(
            f"profile {path} has no `chain:`",
            "name its chain definition (e.g. `chain: minimaxai-minimax-m2.7`), "
            "or `chain: null` for a non-chain deployment",
        )
    chain = None
    if doc["chain"] is not None:
        chain_ref = f.get("chain", str)
        near = [path.parent, path.parent.parent / CHAIN_DIR]
        chain = load_chain(find_chain(chain_ref, near))
    is_chain = chain is not None
    env = f.get("env", dict, default={})
    for k, v in env.items():
        if isinstance(v, bool) or not isinstance(v, (str, int, float)):
            raise ProfileError(f"profile {path}: env {k} = {v!r} is not a string", 'quote it, e.g. "0"')
    node = f.get("node", dict, default={})
    for k in NODE_DEFAULTS:
        if k in node and (isinstance(node[k], bool) or not isinstance(node[k], int)):
            raise ProfileError(f"profile {path}: node.{k} must be an integer", "fix the file")
    poc = f.get("poc", dict, default={})
    poc_batch = poc.get("batch")
    if poc_batch is not None and (isinstance(poc_batch, bool) or not isinstance(poc_batch, int) or poc_batch < 1):
        raise ProfileError(f"profile {path}: poc.batch must be an integer >= 1", "fix the file")
    tref = _throughput_reference(f.get("throughput_reference", dict), path)
    pattern = f.get("gpu_name_pattern", str)
    if pattern is not None:
        try:
            re.compile(pattern)
        except re.error as e:
            raise ProfileError(f"profile {path}: gpu_name_pattern {pattern!r} is not a regex ({e})", "fix it") from e
    prof = Profile(
        name=str(f.get("name", str) or (path.parent.name if path.name == PROFILE_FILE else path.stem)),
        chain=chain,
        gpu_model=f.get("gpu_model", str, required=is_chain),
        gpu_count=f.get("gpu_count", int, required=is_chain, default=0, positive=is_chain),
        gpu_memory_gib=f.get("gpu_memory_gib", (int, float), required=is_chain, positive=True),
        tensor_parallel_size=f.get("tensor_parallel_size", int, default=1, positive=True),
        pipeline_parallel_size=f.get("pipeline_parallel_size", int, default=1, positive=True),
        nodes=f.get("nodes", int, default=1, positive=True),
        layout_fields=tuple(k for k in ("tensor_parallel_size", "pipeline_parallel_size") if doc.get(k) is not None),
        instances_per_host=f.get("instances_per_host", int, default=1, positive=True),
        args=str_list(f.get("args", list, default=[]), path, "args"),
        env={str(k): str(v) for k, v in env.items()},
        throughput_reference=tref,
        peak_tflops=f.get("peak_tflops", (int, float), positive=True),
        node=dict(node),
        gpu_name_pattern=pattern,
        poc_batch=poc_batch,
        model=f.get("model", str),
        path=path,
    )
    args = prof.vllm_args()  # the merge rule, checked at load
    # a layout the file does not write is what its args set, so the fields always say what vLLM gets
    for field, flag in (("tensor_parallel_size", "--tensor-parallel-size"),
                        ("pipeline_parallel_size", "--pipeline-parallel-size")):
        value = flag_value(args, flag)
        if field not in prof.layout_fields and value is not None:
            if not value.isdigit() or int(value) < 1:
                raise ProfileError(f"profile {path}: {flag} {value!r} is not a positive integer",
                                   f"write `{field}: N` in the profile instead")
            setattr(prof, field, int(value))
    if prof.gpu_count and prof.gpu_count % prof.nodes:
        raise ProfileError(f"profile {path}: gpu_count {prof.gpu_count} is not a multiple of nodes {prof.nodes}",
                           "gpu_count is the GPUs of one instance over all its machines")
    return prof
