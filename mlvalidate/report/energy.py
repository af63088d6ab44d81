"""The throughput window's energy section (serving/energy.py writes it into report.json's
throughput_phase.energy) as the reports say it — report.txt's lines, compare's cells — and read
back from a bundle strictly: a field of the wrong type is one line naming it, never a crash."""

from __future__ import annotations

import math

METHOD_WORDS = {"energy counter": "NVML's energy counter", "power samples": "power readings integrated"}
NOT_RECORDED = "not recorded (a bundle from before energy was measured)"


def _num(v) -> bool:
    """None or a finite number a float can hold."""
    return v is None or type(v) is float and math.isfinite(v) or type(v) is int and abs(v) < 2**1000


# energy's fields the reports read, and what each must be
_FIELDS = {
    "measured": (lambda v: isinstance(v, bool), "true or false"),
    "why": (lambda v: v is None or isinstance(v, str), "a string"),
    "source": (lambda v: v is None or isinstance(v, str), "a string"),
    "method": (lambda v: v is None or isinstance(v, str), "a string"),
    "window_s": (_num, "a number"),
    "energy_j": (_num, "a number"),
    "nonces": (_num, "a number"),
    "joules_per_nonce": (_num, "a number"),
    "nonces_per_kwh": (_num, "a number"),
    "average_power_w": (_num, "a number"),
    "average_power_w_per_gpu": (_num, "a number"),
    "gpus": (lambda v: v is None or isinstance(v, list), "a list"),
    "method_notes": (lambda v: v is None or isinstance(v, list) and all(isinstance(x, str) for x in v),
                     "a list of strings"),
    "throttled": (lambda v: v is None or isinstance(v, dict) and isinstance(v.get("thermal", False), bool)
                  and isinstance(v.get("power", False), bool) and isinstance(v.get("flag") or "", str),
                  "an object {thermal, power, flag}"),
}


def energy_problem(energy) -> str | None:
    """None when report.json's throughput_phase.energy can be read as the reports read it, else
    what is wrong with it (the field and what it must be)."""
    if energy is None:
        return None
    if not isinstance(energy, dict):
        return "throughput_phase.energy must be an object"
    for key, (ok, want) in _FIELDS.items():
        if key in energy and not ok(energy[key]):
            return f"throughput_phase.energy.{key} must be {want}, got {str(energy[key])[:40]!r}"
    if "measured" not in energy:
        return "throughput_phase.energy has no 'measured' field"
    return None


def method_text(method: str | None) -> str:
    if not method:
        return "n/a"
    for k, v in METHOD_WORDS.items():
        method = method.replace(k, v)
    return method


def energy_lines(e: dict | None) -> list[str]:
    """report.txt's lines for the window's energy (none when the run had no throughput phase)."""
    if e is None:
        return []
    if not e.get("measured"):
        return [f"energy        not measured: {e.get('why')}"]
    n = len(e.get("gpus") or [])
    jpn, w = e.get("joules_per_nonce"), e.get("average_power_w_per_gpu")
    head = (f"{jpn:.4g} J/nonce = {e['nonces_per_kwh']:,.0f} nonces/kWh" if jpn else
            f"no joules per nonce ({e.get('why')})")
    power = (f"{w:,.1f} W per GPU on average, {e['average_power_w']:,.1f} W in all" if w is not None else
             "no average power")
    window = f"{e['window_s']:.3g} s" if e.get("window_s") else "the"
    lines = [f"energy        {head} over the {window} window ({n} GPU{'s' if n != 1 else ''}: {power}; "
             f"{method_text(e.get('method'))}) [{e.get('source')}]"]
    flag = (e.get("throttled") or {}).get("flag")
    if flag:
        lines.append(f"              THROTTLED: {flag}")
    lines += [f"              {note}" for note in (e.get("method_notes") or [])[:4]]
    return lines


def energy_cells(e: dict | None, has_window: bool) -> dict:
    """The compare report's words for a run's energy: J/nonce, W per GPU, method, throttling; or
    why there is none."""
    if not has_window:
        return {"why": "no throughput phase"}
    if e is None:
        return {"why": NOT_RECORDED}
    if not e.get("measured"):
        return {"why": f"not measured: {e.get('why')}"}
    if not e.get("joules_per_nonce"):
        return {"why": f"no joules per nonce: {e.get('why')}"}
    t = e.get("throttled") or {}
    kinds = [k for k in ("thermal", "power") if t.get(k)]
    return {"joules_per_nonce": e["joules_per_nonce"], "watts_per_gpu": e.get("average_power_w_per_gpu"),
            "method": method_text(e.get("method")), "throttled": " + ".join(kinds) if kinds else "no",
            "flag": t.get("flag")}
