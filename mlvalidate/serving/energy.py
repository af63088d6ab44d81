"""Energy, power, clocks and throttling of the node's GPUs over the throughput phase's measuring
window, read through NVML — only where the harness shares the host with those GPUs.

Whose GPUs (`energy_plan`, the same rule as the node's hardware in serving/node_hardware.py):
an engine in this process (`run`) or a node on loopback computes on this host's GPUs (all the
GPUs NVML sees, or those CUDA_VISIBLE_DEVICES names for an engine in this process); `--nvml
0,1,2,3` (indices or GPU-UUIDs) says which of this host's GPUs the node uses, whatever its URL;
`--nvml none` measures nothing. A remote node's GPUs are not this host's: nothing is measured,
and the bundle says why — never this machine's figures (its MLNode's GPU routes carry no power
or energy either: docs/poc-v2.md §5.2).

What is read (`WindowMeter`), per GPU:
* NVML's total-energy counter (nvmlDeviceGetTotalEnergyConsumption: millijoules since the
  driver loaded, an unsigned 64-bit integer) at the window's two ends, and by a sampler thread
  between them; the energy is the sum of the steps between readings, each modulo 2^64 (a counter
  that wrapped). A step that would mean more than MAX_PLAUSIBLE_W over its time plus a second
  (the counter went back: the driver reloaded) makes the counter unusable for the window;
* power (nvmlDeviceGetPowerUsage, mW), SM clock, temperature and the clock-event ("throttle")
  reasons (nvmlDeviceGetCurrentClocksEventReasons; ...ThrottleReasons before driver 535), every
  `interval_s` (0.1-1 s: about 100 readings a window) from the window's start to its end.
Where the counter is missing (boards before Volta answer Not Supported) or unusable, the GPU's
energy is its power readings integrated over the window (trapezoids), and the bundle says which
method gave each GPU's figure and why. Joules per nonce = the window's energy / the nonces
computed in it (the steady rate's count: its rate times the window, or the timed rounds' nonces).

Throttling: SwThermalSlowdown and HwThermalSlowdown are thermal, SwPowerCap and
HwPowerBrakeSlowdown power, HwSlowdown either (NVML: temperature or an external power brake);
any of them in the window flags it. GpuIdle, application/user clocks, SyncBoost and the display
clock are named but do not flag it.

The sampler thread is a daemon, stopped with the window (`end`) or by `close()` in the
throughput phase's `finally`, which a Ctrl-C/SIGTERM or a token's interrupt goes through: it
never outlives the phase and never delays its end by more than one NVML read. Nothing here
raises into a run: NVML that cannot answer makes the section "not measured", with why.
"""

from __future__ import annotations

import os
import statistics
import threading
import time
from dataclasses import dataclass
from typing import Any

from .node_hardware import on_this_host

U64 = 2**64
MAX_PLAUSIBLE_W = 5000.0  # no single GPU draws this: a counter step past it is a reset, not energy
J_PER_KWH = 3.6e6
TRACE_POINTS = 240  # the bundle keeps at most this many readings of the window (evenly picked)
# NVML's clock-event reason names (nvml.h: nvmlClocksEventReason*, formerly nvmlClocksThrottleReason*), by kind
THERMAL, POWER, EITHER = "thermal", "power", "thermal or power"
REASON_KINDS = {"SwThermalSlowdown": THERMAL, "HwThermalSlowdown": THERMAL, "SwPowerCap": POWER,
                "HwPowerBrakeSlowdown": POWER, "HwSlowdown": EITHER, "GpuIdle": "idle",
                "ApplicationsClocksSetting": "clocks set", "UserDefinedClocks": "clocks set", "SyncBoost": "other",
                "DisplayClockSetting": "other", "BoardLimit": "other", "Reliability": "other"}  # fmt: skip


@dataclass(frozen=True)
class EnergyPlan:
    """Which of this host's GPUs are the node's (`gpus`: indices or UUIDs as given; None: every GPU
    NVML sees) and who says so, or why nothing is measured."""

    gpus: tuple[str, ...] | None
    source: str | None
    why_not: str | None = None
    option: str | None = None  # the --nvml text it came from, if any


def parse_nvml_option(text: str, what: str = "--nvml") -> tuple[str, ...] | str:
    """'0,1,2,3' or 'GPU-8f2e...,1' -> the tokens; 'all' or 'none' as such. Anything else: one line."""
    from ..errors import MlvalidateError

    t = str(text).strip()
    if t.lower() in ("all", "none"):
        return t.lower()
    tokens = tuple(x.strip() for x in t.split(","))
    ok = all(x.isdigit() and int(x) < 4096 or x.startswith("GPU-") and x[4:].replace("-", "").isalnum() and len(x) < 80
             for x in tokens)
    if not t or not ok or len(set(tokens)) != len(tokens):
        raise MlvalidateError(f"{what} {text!r} is not a list of GPU indices or UUIDs",
                              f"e.g. {what} 0,1,2,3 (NVML's indices, as nvidia-smi shows them), {what} all or "
                              f"{what} none")
    return tokens


def energy_plan(url: str | None, option: str | None) -> EnergyPlan:
    """Whose GPUs a run's window measures (module docstring): `url` None for an engine in this
    process; `option` the --nvml text (None: decided by where the node runs)."""
    chosen = parse_nvml_option(option) if option is not None else None
    if chosen == "none":
        return EnergyPlan(None, None, "not asked (--nvml none)", option="none")
    if chosen == "all":
        return EnergyPlan(None, "operator: --nvml all (every GPU of this host is the node's)", option="all")
    if chosen is not None:
        return EnergyPlan(tuple(chosen), f"operator: --nvml {','.join(chosen)} (the node's GPUs on this host)",
                          option=",".join(chosen))
    if url is None:
        visible = os.environ.get("CUDA_VISIBLE_DEVICES", "").strip()
        if visible and visible not in ("-1", "all"):
            try:
                return EnergyPlan(tuple(parse_nvml_option(visible, "CUDA_VISIBLE_DEVICES")),
                                  f"this host: NVML (the engine runs in this process on CUDA_VISIBLE_DEVICES {visible})")
            except Exception:  # noqa: BLE001 — MIG or other forms: every GPU, said so
                pass
        return EnergyPlan(None, "this host: NVML (the engine runs in this process)")
    if on_this_host(url):
        return EnergyPlan(None, "this host: NVML (the node answers on loopback; every GPU of this host, "
                                "--nvml INDICES names the node's)")
    return EnergyPlan(None, None, f"the node at {url} is remote: this host's NVML does not see its GPUs "
                                  "(--nvml INDICES when it computes on this host's GPUs)")


def sample_interval(window_s: float) -> float:
    """About 100 readings a window, 0.1 to 1 s apart."""
    return min(1.0, max(0.1, window_s / 100))


def not_measured(why: str, source: str | None = None) -> dict:
    return {"measured": False, "why": why, **({"source": source} if source else {})}


class WindowMeter:
    """NVML over one measuring window: `begin()` at its start (first reading, the sampler thread
    starts), `end()` at its end (the thread stops, last reading), `close()` always (idempotent:
    stops the thread, shuts NVML down), then `result(...)` for the bundle."""

    def __init__(self, plan: EnergyPlan, *, nvml: Any = None, clock=time.monotonic, interval_s: float = 1.0):
        self.plan, self.nvml, self.clock, self.interval_s = plan, nvml, clock, interval_s
        self.why: str | None = plan.why_not
        self.gpus: list[dict] = []  # index, name, uuid, handle
        self.readings: list[list[dict]] = []  # per reading, per GPU: t, energy_mj, power_w, sm, temp, reasons
        self.errors: list[str] = []
        self.t_begin = self.t_end = None
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._open = False
        self._reasons_fn = None

    # -- the window -------------------------------------------------------------------------
    def begin(self) -> None:
        if self.why is not None:
            return
        try:
            self._start_nvml()
            self.t_begin = self.clock()
            self.sample()
        except Exception as e:  # noqa: BLE001 — NVML that cannot answer never costs the run
            no_driver = getattr(e, "value", None) in (getattr(self.nvml, "NVML_ERROR_LIBRARY_NOT_FOUND", 12),
                                                      getattr(self.nvml, "NVML_ERROR_DRIVER_NOT_LOADED", 9))
            self.why = self.why or (f"{e}: nothing measured" if isinstance(e, LookupError) else (
                "no NVIDIA driver on this host: no GPU energy to read" if no_driver else
                "this host's NVML could not answer") + f" ({_say(e)})")
            self.close()
            return
        self._thread = threading.Thread(target=self._loop, name="mlvalidate-nvml-sampler", daemon=True)
        self._thread.start()

    def end(self) -> None:
        if self.why is not None or not self._open:
            return
        self._join()
        try:
            self.sample()
            self.t_end = self.clock()
        except Exception as e:  # noqa: BLE001
            self.why = f"NVML stopped answering at the window's end: {_say(e)}"
        self.close()

    def close(self) -> None:
        self._join()
        if self._open:
            self._open = False
            try:
                self.nvml.nvmlShutdown()
            except Exception:  # noqa: BLE001
                pass

    def _join(self) -> None:
        self._stop.set()
        t = self._thread
        if t is not None and t.is_alive() and t is not threading.current_thread():
            t.join(timeout=1.0)  # it waits on the event: only an NVML call in progress holds it

    def _loop(self) -> None:
        while not self._stop.wait(self.interval_s):
            try:
                self.sample()
            except Exception as e:  # noqa: BLE001 — a reading lost; the next one may answer
                if len(self.errors) < 5:
                    self.errors.append(_say(e))

    # -- NVML ----------------------------------------------------------------------------------
    def _start_nvml(self) -> None:
        if self.nvml is None:
            import pynvml

            self.nvml = pynvml
        nv = self.nvml
        nv.nvmlInit()
        self._open = True
        count = nv.nvmlDeviceGetCount()
        seen = []
        for i in range(count):
            h = nv.nvmlDeviceGetHandleByIndex(i)
            name, uuid = _opt(nv, nv.nvmlDeviceGetName, h), _opt(nv, nv.nvmlDeviceGetUUID, h)
            seen.append({"index": i, "name": _text(name), "uuid": _text(uuid), "handle": h})
        if self.plan.gpus is None:
            self.gpus = seen
        else:
            for token in self.plan.gpus:
                hit = [g for g in seen if (token.isdigit() and g["index"] == int(token))
                       or (g["uuid"] and not token.isdigit() and g["uuid"].startswith(token))]
                if len(hit) != 1:
                    raise LookupError(f"GPU {token} is not one of the {count} GPU(s) NVML sees here")
                self.gpus.append(hit[0])
        if not self.gpus:
            raise LookupError("NVML sees no GPU on this host")
        for g in self.gpus:
            limit = _opt(nv, nv.nvmlDeviceGetEnforcedPowerLimit, g["handle"])
            g["power_limit_w"] = limit / 1000 if limit is not None else None
        fn = getattr(nv, "nvmlDeviceGetCurrentClocksEventReasons", None)
        try:
            if fn is None:
                raise AttributeError
            fn(self.gpus[0]["handle"])
            self._reasons_fn = fn
        except (AttributeError, nv.NVMLError):  # an older driver or pynvml: the same bits under the old name
            self._reasons_fn = getattr(nv, "nvmlDeviceGetCurrentClocksThrottleReasons", None)

    def sample(self) -> None:
        """One reading of every GPU (the sampler thread calls it every interval_s)."""
        nv, row = self.nvml, []
        for g in self.gpus:
            h = g["handle"]
            t = self.clock()
            energy, energy_error = None, None
            try:
                energy = int(nv.nvmlDeviceGetTotalEnergyConsumption(h))
            except nv.NVMLError as e:
                energy_error = _say(e)
            except AttributeError:
                energy_error = "this pynvml has no nvmlDeviceGetTotalEnergyConsumption"
            power = _opt(nv, nv.nvmlDeviceGetPowerUsage, h)
            row.append({"t": t, "energy_mj": energy, "energy_error": energy_error,
                        "power_w": power / 1000 if power is not None else None,
                        "sm_clock_mhz": _opt(nv, nv.nvmlDeviceGetClockInfo, h, nv.NVML_CLOCK_SM),
                        "temperature_c": _opt(nv, nv.nvmlDeviceGetTemperature, h, nv.NVML_TEMPERATURE_GPU),
                        "reasons": _opt(nv, self._reasons_fn, h) if self._reasons_fn else None})
        with self._lock:
            self.readings.append(row)

    # -- the figures ------------------------------------------------------------------------------
    def result(self, *, rate: float | None, nonces: float | None = None) -> dict:
        """The bundle's energy section: `rate` the steady nonces/s; `nonces` the window's own count
        when it is known exactly (timed rounds), else rate x window."""
        if self.why is not None:
            return not_measured(self.why, self.plan.source)
        if self.t_end is None or len(self.readings) < 2:
            return not_measured("the window did not end (the phase stopped early)", self.plan.source)
        with self._lock:
            rows = list(self.readings)
        window = rows[-1][0]["t"] - rows[0][0]["t"]
        per_gpu = [gpu_figures(g, [r[k] for r in rows], self) for k, g in enumerate(self.gpus)]
        out: dict = {"measured": True, "source": self.plan.source, "gpus": [g["index"] for g in per_gpu],
                     "window_s": round(window, 3), "sample_interval_s": self.interval_s, "n_readings": len(rows)}
        missing = [g for g in per_gpu if g["energy_j"] is None]
        methods = sorted({g["method"] for g in per_gpu if g["energy_j"] is not None})
        out["method"] = methods[0] if len(methods) == 1 else "; ".join(
            f"{m} (GPU {', '.join(str(g['index']) for g in per_gpu if g['method'] == m)})" for m in methods) or None
        out["method_notes"] = [f"GPU {g['index']}: {g['why']}" for g in per_gpu if g.get("why")]
        if missing or window <= 0:
            out.update(energy_j=None, joules_per_nonce=None, average_power_w=None, average_power_w_per_gpu=None,
                       why="no energy figure for GPU " + ", ".join(str(g["index"]) for g in missing)
                       if missing else "the window has no length")
        else:
            energy = sum(g["energy_j"] for g in per_gpu)
            count = nonces if nonces is not None else (rate * window if rate else None)
            out.update(energy_j=round(energy, 3), nonces=round(count, 1) if count else None,
                       joules_per_nonce=energy / count if count and energy > 0 else None,
                       nonces_per_kwh=count / energy * J_PER_KWH if count and energy > 0 else None,
                       average_power_w=round(energy / window, 2),
                       average_power_w_per_gpu=round(energy / window / len(per_gpu), 2))
            if not count:
                out["why"] = "no steady rate: joules per nonce cannot be computed"
            elif energy <= 0:
                out["why"] = "no energy counted over the window (0 J)"
        out["throttled"] = throttle_flags(per_gpu)
        out["per_gpu"] = per_gpu
        if self.errors:
            out["sampler_errors"] = self.errors
        out["trace"] = _trace(rows, self.gpus)
        return out


def gpu_figures(gpu: dict, rows: list[dict], meter: WindowMeter) -> dict:
    """One GPU's energy (counter, else power integrated), power/clock/temperature spread, reasons."""
    out = {"index": gpu["index"], "name": gpu["name"], "uuid": gpu["uuid"], "power_limit_w": gpu["power_limit_w"]}
    energy, method, why = counter_energy(rows)
    if energy is None:
        power = [(r["t"], r["power_w"]) for r in rows if r["power_w"] is not None]
        if len(power) >= 2 and power[0][0] <= rows[0]["t"] + meter.interval_s and \
                power[-1][0] >= rows[-1]["t"] - meter.interval_s:
            energy = sum((b[0] - a[0]) * (a[1] + b[1]) / 2 for a, b in zip(power, power[1:]))
            method, why = "power samples", f"{why}: its power readings integrated over the window"
        else:
            method, why = None, f"{why}, and too few power readings to integrate"
    span = rows[-1]["t"] - rows[0]["t"]
    out.update(method=method, energy_j=round(energy, 3) if energy is not None else None,
               average_power_w=round(energy / span, 2) if energy is not None and span > 0 else None)
    if why:
        out["why"] = why
    for key in ("power_w", "sm_clock_mhz", "temperature_c"):
        vals = [r[key] for r in rows if r[key] is not None]
        out[key] = {"min": min(vals), "median": statistics.median(vals), "max": max(vals)} if vals else None
    out["reasons"] = reason_shares([r["reasons"] for r in rows], meter.nvml)
    kinds = {REASON_KINDS.get(name) for name in out["reasons"]}
    out["thermal"], out["power"] = bool(kinds & {THERMAL, EITHER}), bool(kinds & {POWER, EITHER})
    return out


def counter_energy(rows: list[dict]) -> tuple[float | None, str | None, str | None]:
    """(joules, "energy counter", None) from the counter's steps (each modulo 2^64), or (None, None, why)."""
    if any(r["energy_mj"] is None for r in (rows[0], rows[-1])):
        err = next((r["energy_error"] for r in rows if r["energy_error"]), "no reading")
        return None, None, f"no energy counter ({err})"
    readings = [r for r in rows if r["energy_mj"] is not None]
    total = 0
    for a, b in zip(readings, readings[1:]):
        step = (b["energy_mj"] - a["energy_mj"]) % U64
        if step / 1000 > MAX_PLAUSIBLE_W * (b["t"] - a["t"] + 1.0):  # 1 s of room: a counter updated in bursts
            return None, None, (f"the energy counter jumped from {a['energy_mj']} to {b['energy_mj']} mJ in "
                                f"{b['t'] - a['t']:.2f} s (reset: the driver reloaded?)")
        total += step
    return total / 1000, "energy counter", None


def reason_shares(masks: list[int | None], nvml: Any) -> dict[str, float]:
    """Each clock-event reason seen in the window: the share of readings it was on in."""
    masks = [m for m in masks if m is not None]
    if not masks:
        return {}
    bits = reason_bits(nvml)
    seen: dict[str, int] = {}
    for m in masks:
        left = m
        for name, bit in bits.items():
            if m & bit:
                seen[name] = seen.get(name, 0) + 1
                left &= ~bit
        for b in range(64):
            if left >> b & 1:
                seen[f"bit 0x{1 << b:x}"] = seen.get(f"bit 0x{1 << b:x}", 0) + 1
    return {k: round(v / len(masks), 4) for k, v in seen.items()}


def reason_bits(nvml: Any) -> dict[str, int]:
    """Reason name -> its bit, as the NVML binding defines them (its new names, else the old ones)."""
    out = {}
    for name in REASON_KINDS:
        bit = getattr(nvml, f"nvmlClocksEventReason{name}", None) or getattr(nvml, f"nvmlClocksThrottleReason{name}",
                                                                             None)
        if isinstance(bit, int) and bit and bit not in out.values():
            out[name] = bit
    return out


def throttle_flags(per_gpu: list[dict]) -> dict:
    """{"thermal", "power", "flag": one line naming the GPUs and shares, None when neither}."""
    bits = []
    for kind, names in ((THERMAL, ("SwThermalSlowdown", "HwThermalSlowdown")),
                        (POWER, ("SwPowerCap", "HwPowerBrakeSlowdown")), (EITHER, ("HwSlowdown",))):
        hit = [(g["index"], max(g["reasons"].get(n, 0) for n in names)) for g in per_gpu
               if any(n in g["reasons"] for n in names)]
        if hit:
            what = {THERMAL: "thermal throttling", POWER: "power capping", EITHER: "hardware slowdown (thermal or "
                    "power brake)"}[kind]
            bits.append(f"{what} on GPU " + ", ".join(f"{i} ({100 * s:.0f} % of readings)" for i, s in hit))
    return {"thermal": any(g["thermal"] for g in per_gpu), "power": any(g["power"] for g in per_gpu),
            "flag": "; ".join(bits) or None}


def _trace(rows: list[list[dict]], gpus: list[dict]) -> dict:
    """At most TRACE_POINTS readings: seconds into the window, and per GPU its power, SM clock,
    temperature and reason bits."""
    step = max(1, -(-len(rows) // TRACE_POINTS))
    picked = rows[::step] if rows[-1] is rows[::step][-1] else [*rows[::step], rows[-1]]
    t0 = rows[0][0]["t"]
    return {"t_s": [round(r[0]["t"] - t0, 3) for r in picked],
            **{key: {str(g["index"]): [r[k][key] for r in picked] for k, g in enumerate(gpus)}
               for key in ("power_w", "sm_clock_mhz", "temperature_c", "reasons")}}


def _opt(nv, fn, *a):
    try:
        return fn(*a)
    except nv.NVMLError:
        return None


def _text(v) -> str | None:
    return None if v is None else v.decode() if isinstance(v, bytes) else str(v)


def _say(e: BaseException) -> str:
    return " ".join(f"{type(e).__name__}: {e}".split())[:200]
