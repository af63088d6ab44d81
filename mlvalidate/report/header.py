"""The head of both HTML reports (and their Markdown): what the runs were checked against and
when — the reference, the model, the stat test with its sources, the harness version, the run
time — read from the bundles' report.json. Where the runs differ, each value is listed with the
runs that have it; where an older bundle does not record a value, it says so."""

from __future__ import annotations

import datetime as _dt

from .bundles import RunBundle

NOT_RECORDED = "not recorded (an older bundle)"


def _stat_text(st) -> str | None:
    if not isinstance(st, dict) or not isinstance(st.get("values"), dict):
        return None
    vals, src = st["values"], st.get("source") if isinstance(st.get("source"), dict) else {}
    parts = []
    for k in ("dist_threshold", "p_mismatch", "fraud_threshold"):
        v = vals.get(k)
        if isinstance(v, (int, float)) and not isinstance(v, bool):
            parts.append(f"{k} {v:g}" + (f" [{src[k]}]" if isinstance(src.get(k), str) else ""))
    return " · ".join(parts) or None


def _grouped(runs: list[RunBundle], value) -> str:
    """One value for every run, or each value with the runs that have it."""
    seen: dict[str, list[str]] = {}
    for r in runs:
        v = value(r)
        seen.setdefault(v if isinstance(v, str) and v else NOT_RECORDED, []).append(r.name)
    if len(seen) == 1:
        return next(iter(seen))
    return "; ".join(f"{v} ({', '.join(names)})" for v, names in seen.items())


def _time(text) -> _dt.datetime | None:
    try:
        t = _dt.datetime.fromisoformat(text) if isinstance(text, str) else None
    except ValueError:
        return None
    return t.astimezone(_dt.timezone.utc) if t is not None and t.tzinfo is not None else None


def run_time_text(runs: list[RunBundle]) -> str:
    """From the earliest start to the latest bundle written, in UTC."""
    starts = [t for r in runs for t in [_time(r.report.get("started_at")) or _time(r.report.get("written_at"))] if t]
    ends = [t for r in runs if (t := _time(r.report.get("written_at")))]
    if not starts:
        return NOT_RECORDED
    a, b = min(starts), max(ends or starts)
    same_day = a.date() == b.date()
    return f"{a:%Y-%m-%d %H:%M:%S} – {b:%H:%M:%S} UTC" if same_day else f"{a:%Y-%m-%d %H:%M} – {b:%Y-%m-%d %H:%M} UTC"


def header_rows(runs: list[RunBundle], *, extra: list[tuple[str, str]] | None = None) -> list[tuple[str, str]]:
    """(label, text) rows for the head of a report over `runs`."""
    from .. import __version__

    harness = _grouped(runs, lambda r: f"mlvalidate {r.report['harness_version']}"
                       if isinstance(r.report.get("harness_version"), str) else None) if runs else "n/a"
    now = _dt.datetime.now(_dt.timezone.utc)
    def ref(r):
        if r.report.get("reference") is None and "harness_version" in r.report:
            return f"not a file (a reference for {r.report.get('model')} held in memory)"
        return r.report.get("reference")

    rows = [("reference", _grouped(runs, ref) if runs else "n/a"),
            ("model", _grouped(runs, lambda r: r.report.get("model")) if runs else "n/a"),
            ("stat test", _grouped(runs, lambda r: _stat_text(r.report.get("stat_test"))) if runs else "n/a"),
            ("harness", f"runs by {harness}; this report by mlvalidate {__version__}, {now:%Y-%m-%d %H:%M} UTC"),
            ("run time", run_time_text(runs) if runs else "n/a")]
    return rows + list(extra or [])
