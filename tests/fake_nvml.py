"""An NVML stand-in built from pynvml's own structs and errors (these machines have no GPU):
`FakeNVML(name, count, total_mib)` answers what serving/hardware.read_inventory and Gonka's
MLNode (api/gpu/manager.py) ask, like a real driver would. Imported by the tests, and by
tests/mlnode_launch.py into the real MLNode's process (MLNODE_FAKE_GPUS) so that its GPU routes
answer for GPUs this machine does not have.

Over time (serving/energy.py's window), each GPU follows a `Script`: its power, SM clock,
temperature and clock-event (throttle) reasons as steps in time, read on the fake's own clock
(`clock`, time.monotonic by default; a test may pass a clock it moves by hand). The total-energy
counter (nvmlDeviceGetTotalEnergyConsumption, mJ since the driver loaded, an unsigned 64-bit
integer) is the exact integral of that power from `energy_start_mj`, modulo 2^64 (start it just
below 2^64 to make it wrap within a test). A GPU whose script
says `energy_counter=False` answers NVMLError_NotSupported, as boards before Volta do.
nvmlInit / nvmlShutdown are reference-counted, as NVML's are."""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import pynvml

MIB = 1024**2
THERMAL = pynvml.nvmlClocksEventReasonSwThermalSlowdown | pynvml.nvmlClocksEventReasonHwThermalSlowdown
POWER_CAP = pynvml.nvmlClocksEventReasonSwPowerCap


def _at(steps: list[tuple[float, float]], t: float) -> float:
    """The value of a step function [(from_s, value), ...] (sorted) at t (the first step before its start)."""
    value = steps[0][1]
    for start, v in steps:
        if t >= start:
            value = v
    return value


@dataclass
class Script:
    """One GPU over time: steps [(from_s, value)] on the fake's clock, from its creation."""

    power_w: list[tuple[float, float]] = field(default_factory=lambda: [(0.0, 113.456)])
    sm_clock_mhz: list[tuple[float, float]] = field(default_factory=lambda: [(0.0, 1755)])
    temperature_c: list[tuple[float, float]] = field(default_factory=lambda: [(0.0, 41)])
    reasons: list[tuple[float, int]] = field(default_factory=lambda: [(0.0, 0)])  # clock-event reason bits
    energy_counter: bool = True
    energy_start_mj: int = 5_000_000_000
    reload_at_s: float | None = None  # the driver reloads then: the counter starts again from 0

    def energy_mj(self, t: float) -> int:
        """The counter at t: energy_start_mj + the integral of power_w from 0 to t, in mJ, wrapped
        (after a reload: the integral since it, from 0)."""
        since = self.reload_at_s if self.reload_at_s is not None and t >= self.reload_at_s else 0.0
        total, steps = 0.0, [s for s in self.power_w if s[0] < t]
        for (a, w), nxt in zip(steps, [*steps[1:], (t, 0.0)]):
            total += w * max(0.0, nxt[0] - max(a, since)) * 1000
        return ((0 if since else self.energy_start_mj) + int(total)) % 2**64


class FakeNVML:
    """The slice of pynvml that read_inventory uses, answering like a real driver would: the
    same struct types (c_nvmlMemory_t, process info objects), milliwatts, MHz, the integer CUDA
    version, and pynvml's own NVMLError subclasses for unsupported queries."""

    NVMLError = pynvml.NVMLError
    # pynvml's own constants: NVML_CLOCK_SM, NVML_ERROR_*, NVML_TEMPERATURE_GPU, the clock-event reason bits...
    locals().update({k: v for k, v in vars(pynvml).items()
                     if isinstance(v, int) and (k.startswith("NVML_") or k.startswith("nvmlClocks"))})

    def __init__(self, name, count, total_mib, *, used_mib=None, procs=None, init_error=None, power=True,
                 scripts: dict[int, Script] | None = None, clock=time.monotonic, event_reasons: bool = True):
        self.name, self.count, self.total = name, count, total_mib * MIB
        self.used = {i: (used_mib or {}).get(i, 512) * MIB for i in range(count)}
        self.procs = procs or {}  # gpu index -> [(pid, MiB)]
        self.init_error, self.power = init_error, power
        self.scripts = {i: (scripts or {}).get(i) or Script() for i in range(count)}
        self.clock, self.t0 = clock, clock()
        self.event_reasons = event_reasons  # False: a driver older than nvmlDeviceGetCurrentClocksEventReasons
        self.refs = 0
        self.calls: dict[str, int] = {}  # energy / power / reason reads, for the tests

    @property
    def live(self) -> bool:
        return self.refs > 0

    def nvmlInit(self):
        if self.init_error is not None:
            raise pynvml.NVMLError(self.init_error)  # -> the matching NVMLError_* subclass
        self.refs += 1

    def nvmlShutdown(self):
        if self.refs == 0:
            raise pynvml.NVMLError(pynvml.NVML_ERROR_UNINITIALIZED)
        self.refs -= 1

    def _h(self, h):
        if not self.live:
            raise pynvml.NVMLError(pynvml.NVML_ERROR_UNINITIALIZED)
        return h

    def _now(self, h, what: str) -> tuple[Script, float]:
        self._h(h)
        self.calls[what] = self.calls.get(what, 0) + 1
        return self.scripts[h[1]], self.clock() - self.t0

    def nvmlDeviceGetCount(self):
        return self.count

    def nvmlDeviceGetHandleByIndex(self, i):
        return ("handle", i)

    def nvmlDeviceGetName(self, h):
        self._h(h)
        return self.name

    def nvmlDeviceGetUUID(self, h):
        return f"GPU-0000000{h[1]}-aaaa-bbbb-cccc-000000000000"

    def nvmlDeviceGetMemoryInfo(self, h):
        used = self.used[h[1]]
        return pynvml.c_nvmlMemory_t(total=self.total, free=self.total - used, used=used)

    def nvmlDeviceGetComputeRunningProcesses(self, h):
        return [pynvml.nvmlStructToFriendlyObject(pynvml.c_nvmlProcessInfo_v3_t(pid=pid, usedGpuMemory=mib * MIB))
                for pid, mib in self.procs.get(h[1], [])]  # fmt: skip

    def nvmlDeviceGetGraphicsRunningProcesses(self, h):
        return []

    def nvmlSystemGetProcessName(self, pid):
        return "python3" if pid != 4242 else b"/usr/bin/vllm"  # older pynvml returned bytes

    def nvmlDeviceGetClockInfo(self, h, kind):
        script, t = self._now(h, "clock")
        return {pynvml.NVML_CLOCK_SM: int(_at(script.sm_clock_mhz, t)), pynvml.NVML_CLOCK_MEM: 2619}[kind]

    def nvmlDeviceGetMaxClockInfo(self, h, kind):
        return {pynvml.NVML_CLOCK_SM: 1980, pynvml.NVML_CLOCK_MEM: 2619}[kind]

    def nvmlDeviceGetPowerUsage(self, h):
        if not self.power:
            raise pynvml.NVMLError(pynvml.NVML_ERROR_NOT_SUPPORTED)
        script, t = self._now(h, "power")
        return int(round(_at(script.power_w, t) * 1000))  # mW

    def nvmlDeviceGetTotalEnergyConsumption(self, h):
        script, t = self._now(h, "energy")
        if not script.energy_counter:
            raise pynvml.NVMLError(pynvml.NVML_ERROR_NOT_SUPPORTED)
        return script.energy_mj(t)  # mJ since the driver loaded

    def nvmlDeviceGetCurrentClocksEventReasons(self, h):
        if not self.event_reasons:  # an older driver: the function is not in its library
            raise pynvml.NVMLError(pynvml.NVML_ERROR_FUNCTION_NOT_FOUND)
        script, t = self._now(h, "reasons")
        return int(_at(script.reasons, t))

    def nvmlDeviceGetCurrentClocksThrottleReasons(self, h):  # the name before driver 535: the same bits
        script, t = self._now(h, "reasons")
        return int(_at(script.reasons, t))

    def nvmlDeviceGetEnforcedPowerLimit(self, h):
        if not self.power:
            raise pynvml.NVMLError(pynvml.NVML_ERROR_NOT_SUPPORTED)
        return 700_000

    def nvmlSystemGetDriverVersion(self):
        return "570.124.06"

    def nvmlSystemGetCudaDriverVersion(self):
        return 12080

    def nvmlSystemGetNVMLVersion(self):
        return "12.570.124.06"

    def nvmlDeviceGetUtilizationRates(self, h):
        return pynvml.c_nvmlUtilization_t(gpu=37, memory=12)

    def nvmlDeviceGetTemperature(self, h, sensor):
        script, t = self._now(h, "temperature")
        return int(_at(script.temperature_c, t))
