"""An NVML stand-in built from pynvml's own structs and errors (these machines have no GPU):
`FakeNVML(name, count, total_mib)` answers what serving/hardware.read_inventory and Gonka's
MLNode (api/gpu/manager.py) ask, like a real driver would. Imported by the tests, and by
tests/mlnode_launch.py into the real MLNode's process (MLNODE_FAKE_GPUS) so that its GPU routes
answer for GPUs this machine does not have."""

import pynvml

MIB = 1024**2


class FakeNVML:
    """The slice of pynvml that read_inventory uses, answering like a real driver would: the
    same struct types (c_nvmlMemory_t, process info objects), milliwatts, MHz, the integer CUDA
    version, and pynvml's own NVMLError subclasses for unsupported queries."""

    NVMLError = pynvml.NVMLError
    NVML_CLOCK_SM, NVML_CLOCK_MEM = pynvml.NVML_CLOCK_SM, pynvml.NVML_CLOCK_MEM
    NVML_ERROR_LIBRARY_NOT_FOUND = pynvml.NVML_ERROR_LIBRARY_NOT_FOUND
    NVML_ERROR_DRIVER_NOT_LOADED = pynvml.NVML_ERROR_DRIVER_NOT_LOADED
    NVML_TEMPERATURE_GPU = pynvml.NVML_TEMPERATURE_GPU

    def __init__(self, name, count, total_mib, *, used_mib=None, procs=None, init_error=None, power=True):
        self.name, self.count, self.total = name, count, total_mib * MIB
        self.used = {i: (used_mib or {}).get(i, 512) * MIB for i in range(count)}
        self.procs = procs or {}  # gpu index -> [(pid, MiB)]
        self.init_error, self.power = init_error, power
        self.live = False

    def nvmlInit(self):
        if self.init_error is not None:
            raise pynvml.NVMLError(self.init_error)  # -> the matching NVMLError_* subclass
        self.live = True

    def nvmlShutdown(self):
        self.live = False

    def _h(self, h):
        assert self.live, "NVML used outside nvmlInit/nvmlShutdown"
        return h

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
        return {pynvml.NVML_CLOCK_SM: 1755, pynvml.NVML_CLOCK_MEM: 2619}[kind]

    def nvmlDeviceGetMaxClockInfo(self, h, kind):
        return {pynvml.NVML_CLOCK_SM: 1980, pynvml.NVML_CLOCK_MEM: 2619}[kind]

    def nvmlDeviceGetPowerUsage(self, h):
        if not self.power:
            raise pynvml.NVMLError(pynvml.NVML_ERROR_NOT_SUPPORTED)
        return 113_456  # mW

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
        return 41
