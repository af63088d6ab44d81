"""Run bundles read back for the comparison and fleet reports: the typed `RunBundle`, the
cross-run distance matrix, the tables' rows and their colours."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import MlvalidateError
from .bundle import REPORT_SCHEMA
from .energy import energy_problem
from .text import fmt_float

NO_PLOTS = "plots need the `plots` extra (pip install mlvalidate[plots], i.e. matplotlib): tables only"


class CompareError(MlvalidateError):
    """A run bundle given to `compare` cannot be read."""


@dataclass
class RunBundle:
    name: str
    path: Path
    report: dict
    environment: dict | None
    config: dict | None
    profile_name: str | None = None
    profile: Any = None  # serving.profiles.Profile when the name loads
    _vectors: Any = field(default=None, repr=False)
    _hardware: Any = field(default=None, repr=False)

    # -- what the tables show -------------------------------------------------------------
    @property
    def verdict(self) -> str:
        return str(self.report.get("verdict"))

    @property
    def threshold(self) -> float | None:
        try:
            return float(self.report["stat_test"]["values"]["dist_threshold"])
        except (KeyError, TypeError, ValueError):
            return None

    def distances(self) -> np.ndarray:
        d = self.report.get("distances") or {}
        return np.array([np.nan if v is None else float(v) for v in d.values()], dtype=np.float64)

    def engine_url(self) -> str | None:
        """The node's URL (None: an engine in the harness's own process)."""
        for doc in (self.environment, self.config):
            eng = (doc or {}).get("engine")
            if isinstance(eng, dict):
                return eng["url"] if isinstance(eng.get("url"), str) else None
        return None

    def hardware(self):
        """The node's hardware (results.NodeHardware) as the bundle records it: never the harness
        machine's for a remote node (serving/node_hardware.hardware_of_environment)."""
        if self._hardware is None:
            from ..serving.node_hardware import hardware_of_environment

            self._hardware = hardware_of_environment(self.environment, self.engine_url())
        return self._hardware

    def hardware_cell(self) -> str:
        """The tables' word for the node's hardware and where it came from."""
        hw = self.hardware()
        return f"{hw.label()} [{short_source(hw)}]"

    def steady_per_min(self) -> float | None:
        tp = self.report.get("throughput_phase") or {}
        v = (tp.get("summary") or {}).get("steady_nonces_per_min")
        return float(v) if v is not None else None

    def published_per_min(self) -> float | None:
        tref = getattr(self.profile, "throughput_reference", None) or {}
        v = tref.get("nonces_per_min")
        return float(v) if v else None

    def roofline_per_min(self) -> float | None:
        if self.profile is None:
            return None
        roof = self.profile.roofline_nonces_per_min_per_gpu()
        return roof * self.profile.gpu_count if roof and self.profile.gpu_count else None

    def vectors(self):
        """vectors.json as a Reference (strict=False: bad rows are invalid), or None if absent or
        empty (a run that got no vector back: an ERROR run's bundle)."""
        if self._vectors is None:
            p = self.path / "vectors.json"
            self._vectors = False
            if p.is_file():
                from ..artifacts import load_computed

                try:
                    self._vectors = load_computed(p)
                except MlvalidateError:
                    self._vectors = False
        return self._vectors or None


def short_source(hw) -> str:
    """Where a NodeHardware came from, in a few words: "node", "this host", "--gpus", "profile
    h100x4", "older bundle", or why it is unknown."""
    if not hw.known:  # the reason's head; the record (environment.json, fleet.json) keeps all of it
        return (hw.why or "nothing says").split(": ")[0]
    src = hw.source
    for prefix, word in (("node:", "the node"), ("this host", "this host"), ("older bundle", "this host, older bundle")):
        if src.startswith(prefix):
            return word
    return src.removeprefix("operator: ")


def _read_json(path: Path, what: str, required: bool) -> dict | None:
    from ..jsonio import JsonProblem, loads

    if not path.is_file():
        if required:
            raise CompareError(f"{path.parent}: no {path.name} — not a run bundle",
                               "pass folders written by `mlvalidate validate --out` or `mlvalidate demo`")
        return None
    try:
        doc = loads(path.read_bytes())
    except OSError as e:
        raise CompareError(f"{path}: unreadable {what} ({e.strerror or e})", "re-run the validation to rewrite the bundle") from None
    except JsonProblem as e:
        raise CompareError(f"{path}: unreadable {what}: {e}", "re-run the validation to rewrite the bundle") from None
    if not isinstance(doc, dict):
        raise CompareError(f"{path}: {what} is not a JSON object", "re-run the validation to rewrite the bundle")
    return doc


def _number(v) -> bool:
    """None, or a JSON number a float can hold (NaN and infinities are shown as n/a)."""
    if v is None or isinstance(v, float):
        return True
    return type(v) is int and abs(v) < 2**1000


def _count(v) -> bool:
    return v is None or type(v) is int and 0 <= v < 2**63


# report.json's fields the reports read, and what each must be (None is always allowed but for verdict)
_REPORT_FIELDS = {
    "verdict": (lambda v: isinstance(v, str), "a string"),
    "name": (lambda v: v is None or isinstance(v, str), "a string"),
    "distances": (lambda v: isinstance(v, dict) and all(_number(x) for x in v.values()),
                  "an object of numbers (or null)"),
    "stat_test": (lambda v: isinstance(v, dict), "an object"),
    "n_total": (_count, "a count (an integer 0..2^63)"),
    "n_mismatch": (_count, "a count (an integer 0..2^63)"),
    "p_value": (_number, "a number"),
    "throughput_phase": (lambda v: v is None or isinstance(v, dict) and isinstance(v.get("summary") or {}, dict)
                         and _number((v.get("summary") or {}).get("steady_nonces_per_min"))
                         and isinstance(v.get("profile") or "", str),
                         "an object whose summary.steady_nonces_per_min is a number"),
}


def _check_report(report: dict, path: Path) -> None:
    """Every report.json field the reports read has the type they read it as: a bundle that was
    edited or corrupted is one line naming the field, never a crash in a table."""
    for key, (ok, want) in _REPORT_FIELDS.items():
        if key not in report and key not in ("verdict", "distances", "stat_test"):
            continue
        if key not in report:
            raise CompareError(f"{path}: no {key!r} field", "re-run the validation to rewrite the bundle")
        if not ok(report[key]):
            raise CompareError(f"{path}: field {key!r} must be {want}, got {_short(report[key])}",
                               "re-run the validation to rewrite the bundle")
    problem = energy_problem((report.get("throughput_phase") or {}).get("energy"))  # the window's energy, if any
    if problem:
        raise CompareError(f"{path}: {problem}", "re-run the validation to rewrite the bundle")


def _short(v, limit: int = 60) -> str:
    text = repr(v)
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _profile_name(report: dict, env: dict | None, config: dict | None) -> str | None:
    tp = report.get("throughput_phase") or {}
    if tp.get("profile"):
        return str(tp["profile"])
    for section in (env, (env or {}).get("run")):  # environment.json's run section (older bundles: top level)
        if isinstance(section, dict) and isinstance(section.get("profile"), str) and section["profile"]:
            return section["profile"]
    inputs = (config or {}).get("inputs")
    inp = inputs.get("profile") if isinstance(inputs, dict) else None
    if isinstance(inp, dict) and inp.get("value"):
        return str(inp["value"])
    return None


def load_bundle(path: str | Path, profiles=None) -> RunBundle:
    """One bundle; `profiles(name)` gives the Profile a run names (its published figure and
    roofline), or None."""
    p = Path(path)
    if not p.is_dir():
        raise CompareError(f"{p}: not a run bundle folder (no such directory)",
                           "pass folders written by `mlvalidate validate --out` or `mlvalidate demo`")
    report = _read_json(p / "report.json", "report", required=True)
    if report.get("schema") != REPORT_SCHEMA:
        raise CompareError(f"{p / 'report.json'}: schema {_short(report.get('schema'))}, expected {REPORT_SCHEMA!r}",
                           "compare reads bundles from this mlvalidate version; re-run the validation")
    _check_report(report, p / "report.json")
    env = _read_json(p / "environment.json", "environment", required=False)
    if env is not None and not isinstance(env.get("gpus") or [], list):
        raise CompareError(f"{p / 'environment.json'}: field 'gpus' must be a list, got {_short(env.get('gpus'))}",
                           "re-run the validation to rewrite the bundle")
    for key in ("harness", "node", "run"):  # the sections a bundle of this version writes
        if env is not None and not isinstance(env.get(key) or {}, dict):
            raise CompareError(f"{p / 'environment.json'}: field {key!r} must be an object, got {_short(env.get(key))}",
                               "re-run the validation to rewrite the bundle")
    config = _read_json(p / "config.json", "config", required=False)
    run = RunBundle(name=str(report.get("name") or p.name), path=p, report=report, environment=env, config=config)
    run.profile_name = _profile_name(report, env, config)
    if run.profile_name and profiles is not None:
        run.profile = profiles(run.profile_name)  # None: named but not loadable here (no published figure)
    return run


def load_bundles(paths, profiles=None) -> list[RunBundle]:
    runs = [load_bundle(p, profiles) for p in paths]
    seen: dict[str, int] = {}
    for r in runs:  # names must tell runs apart in every table
        seen[r.name] = seen.get(r.name, 0) + 1
    for r in runs:
        if seen[r.name] > 1:
            r.name = f"{r.name} ({r.path})"
    return runs


# ----------------------------------------------------------------------------------------
# the numbers
# ----------------------------------------------------------------------------------------
def pair_distance(a: RunBundle, b: RunBundle) -> tuple[float | None, int, str | None]:
    """(median L2 over shared usable nonces, shared count, why n/a)."""
    from ..artifacts import same_poc_params

    va, vb = a.vectors(), b.vectors()
    if va is None or vb is None:
        return None, 0, "no vectors"
    diff = same_poc_params(va, vb)
    if diff:
        return None, 0, "different PoC params: " + "; ".join(diff)
    ia = {int(n): i for i, n in enumerate(va.nonces) if va.valid[i]}
    ib = {int(n): i for i, n in enumerate(vb.nonces) if vb.valid[i]}
    shared = sorted(ia.keys() & ib.keys())
    if not shared:
        return None, 0, "no shared nonce"
    xa = va.vectors[[ia[n] for n in shared]].astype(np.float64)
    xb = vb.vectors[[ib[n] for n in shared]].astype(np.float64)
    return float(np.median(np.linalg.norm(xa - xb, axis=1))), len(shared), None


def distance_matrix(runs: list[RunBundle]) -> list[list[tuple[float | None, int, str | None]]]:
    n = len(runs)
    m: list[list[Any]] = [[None] * n for _ in range(n)]
    for i in range(n):
        for j in range(i, n):
            m[i][j] = m[j][i] = pair_distance(runs[i], runs[j])
    return m


def pct_of(x: float | None, of: float | None, digits: int = 0) -> str:
    if x is None or not of:
        return "n/a"
    return f"{100 * x / of:.{digits}f} %"


def verdict_rows(runs: list[RunBundle]) -> list[list[str]]:
    rows = []
    for r in runs:
        rep, per_min = r.report, r.steady_per_min()
        n_mis, n_tot = rep.get("n_mismatch"), rep.get("n_total")
        rows.append([
            r.name, r.profile_name or "n/a", r.hardware_cell(), r.verdict,
            f"{n_mis} / {n_tot}" if n_tot is not None else "n/a",
            fmt_float(rep.get("p_value"), 3),
            f"{per_min:,.1f}" if per_min is not None else "n/a",
            pct_of(per_min, r.published_per_min()) if r.profile else "n/a",
            pct_of(per_min, r.roofline_per_min(), 1) if r.profile else "n/a",
        ])  # fmt: skip
    return rows


VERDICT_HEAD = ["run", "profile", "hardware [source]", "verdict", "n_mismatch / n_total", "p-value",
                "steady nonces/min", "% of published", "% of roofline"]  # fmt: skip


def matrix_rows(runs: list[RunBundle], m) -> tuple[list[str], list[list[str]]]:
    head = ["median L2 (shared nonces)"] + [r.name for r in runs]
    rows = []
    for i, r in enumerate(runs):
        cells = [r.name]
        for med, n, why in m[i]:
            cells.append(f"{med:.4g} ({n})" if med is not None else f"n/a ({why})")
        rows.append(cells)
    return head, rows


def distance_summary(r: RunBundle) -> str:
    d = r.distances()
    fin = d[np.isfinite(d)]
    if fin.size == 0:
        return "no finite distance"
    thr = r.threshold
    over = int((fin > thr).sum()) if thr is not None else None
    return (f"{fin.size} finite distances (+{d.size - fin.size} missing/invalid): median {np.median(fin):.4g}, "
            f"p90 {np.percentile(fin, 90):.4g}, max {fin.max():.4g}; threshold {fmt_float(thr)}"
            + (f", {over} over" if over is not None else ""))


def throughput_groups(runs: list[RunBundle]) -> dict[str, list[RunBundle]]:
    groups: dict[str, list[RunBundle]] = {}
    for r in runs:
        if r.steady_per_min() is not None:
            groups.setdefault(r.profile_name or "no profile", []).append(r)
    return groups


# ----------------------------------------------------------------------------------------
# how it looks: ONE colour per verdict (every table, badge and plot takes it from here; the
# pages' CSS is generated from it), and the heat map's scale, in blues that no verdict uses
# ----------------------------------------------------------------------------------------
VERDICT_CLASS = {"PASS": "v-pass", "PASS-with-mismatches": "v-pwm", "FAIL": "v-fail", "INCOMPLETE": "v-incomplete",
                 "ERROR": "v-error", "SKIPPED": "v-skipped"}  # fmt: skip
VERDICT_COLOR = {"PASS": "#1a7f37", "PASS-with-mismatches": "#6a9f1f", "FAIL": "#c62828", "INCOMPLETE": "#e07b00",
                 "ERROR": "#6e4b9e", "SKIPPED": "#888888"}  # fmt: skip
_HEAT = ((0.0, (0xf7, 0xfb, 0xff)), (1.0, (0x6b, 0xae, 0xd6)), (2.0, (0x08, 0x30, 0x6b)))  # L2 / gate -> colour
HEAT_NA = "#dddddd"


def verdict_class(verdict: str) -> str:
    return VERDICT_CLASS.get(str(verdict), "v-error")


def verdict_css() -> str:
    """The verdict classes' CSS, from VERDICT_COLOR (the templates include it)."""
    return "".join(f".{VERDICT_CLASS[v]}{{background:{c}}}" for v, c in VERDICT_COLOR.items())


def heat_color(value: float | None, gate: float | None) -> str:
    """Background of a distance-matrix cell: near white at 0, mid blue at the gate, dark blue from twice the gate."""
    if value is None or not np.isfinite(value) or not gate:
        return HEAT_NA
    x = min(max(value / gate, 0.0), _HEAT[-1][0])
    for (x0, c0), (x1, c1) in zip(_HEAT, _HEAT[1:]):
        if x <= x1:
            f = (x - x0) / (x1 - x0)
            return "#" + "".join(f"{round(a + f * (b - a)):02x}" for a, b in zip(c0, c1))
    return "#" + "".join(f"{c:02x}" for c in _HEAT[-1][1])


def heat_legend(gate: float | None) -> list[dict]:
    """The heat map's legend: its three anchors and n/a, with the colour each is drawn in."""
    g = f" {gate:g}" if gate else ""
    return [{"text": "0", "color": heat_color(0.0, 1.0), "dark": False},
            {"text": f"gate{g}", "color": heat_color(1.0, 1.0), "dark": False},
            {"text": "≥ 2 × gate", "color": heat_color(2.0, 1.0), "dark": True},
            {"text": "n/a", "color": HEAT_NA, "dark": False}]


def matrix_gate(runs: list[RunBundle]) -> float | None:
    gates = [r.threshold for r in runs if r.threshold]
    return min(gates) if gates else None


def heat_cells(runs: list[RunBundle], m) -> list[list[dict]]:
    """The matrix for the HTML heat map: per cell its text, colour and a tooltip."""
    gate = matrix_gate(runs)
    rows = []
    for i, a in enumerate(runs):
        cells = []
        for j, (med, n, why) in enumerate(m[i]):
            text = f"{med:.3g}" if med is not None else "n/a"
            tip = (f"{a.name} vs {runs[j].name}: median L2 {med:.4g} over {n} shared nonces" if med is not None
                   else f"{a.name} vs {runs[j].name}: {why}")
            cells.append({"text": text, "n": n, "color": heat_color(med, gate), "title": tip,
                          "dark": med is not None and bool(gate) and med > 1.3 * gate})
        rows.append(cells)
    return rows


# ----------------------------------------------------------------------------------------
# plots (optional)
