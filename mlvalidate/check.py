"""`mlvalidate check`: compare a file of computed vectors with a reference, offline.

The computed file is the system under test's output, so it goes through the same intake
rule as a node's answers (`poc.intake`): malformed entries, unusable vectors, conflicting
duplicates and nonces the reference does not hold are listed, never raised. Only the
reference is strict. The stat test is resolved (and refused if it cannot fail) before the
computed file is read, and the computed file's PoC params, k_dim included, are checked
against the reference's before any of its vectors is decoded. A `device` for the distances
is checked first of all: one this machine cannot use is a one-line error, not a traceback.
"""

from __future__ import annotations

from dataclasses import dataclass

from .artifacts import Reference, ResolvedStatTest, load_computed, load_reference, resolve_stat_test
from .errors import MlvalidateError
from .poc.stats import Comparison, compare_intake

_NO_DEVICE_HINT = "drop --device to compare with numpy on this CPU, or run where that device is"


@dataclass
class CheckResult:
    reference: Reference
    computed: Reference  # read leniently: its intake lists what is unusable
    stat_test: ResolvedStatTest
    comparison: Comparison


def comparison_device(name):
    """The device the distances are computed on: None (numpy, this CPU) for no device or "cpu",
    else a torch device this machine can use. MlvalidateError (one line, exit 2) when torch is
    not installed, the name is no torch device, or the device is absent (no CUDA build, no GPU)."""
    if name is None or str(name) == "cpu":
        return None
    try:
        import torch
    except ImportError:
        raise MlvalidateError(f"--device {name} needs torch, which this Python does not have",
                              "install torch with that device's support, or drop --device (numpy needs nothing more)"
                              ) from None
    try:
        dev = torch.device(name)
    except (RuntimeError, ValueError):
        raise MlvalidateError(f"--device {name!r} is not a torch device", "use cpu, cuda or cuda:N") from None
    if dev.type == "cuda" and torch.version.cuda is None and torch.version.hip is None:
        raise MlvalidateError(f"--device {name}: this torch ({torch.__version__}) was built without CUDA",
                              _NO_DEVICE_HINT)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise MlvalidateError(f"--device {name}: torch {torch.__version__} sees no CUDA GPU (no driver or none "
                              "visible)", _NO_DEVICE_HINT)
    try:
        torch.zeros(1, device=dev)  # an ordinal past the GPUs, or another device type this build lacks
    except (AssertionError, RuntimeError) as e:
        why = " ".join(str(e).split())[:160]
        raise MlvalidateError(f"--device {name}: torch {torch.__version__} cannot use it ({why})",
                              _NO_DEVICE_HINT) from None
    return dev


def check_files(reference: str, computed: str, overrides: dict | None = None, device=None) -> CheckResult:
    device = comparison_device(device)
    ref = load_reference(reference)
    st = resolve_stat_test(ref, overrides)
    got = load_computed(computed, against=ref)
    comp = compare_intake(ref.nonces, ref.vectors, got.intake, st.values, device=device)
    return CheckResult(ref, got, st, comp)
