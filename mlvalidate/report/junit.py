"""JUnit XML for CI: one test case per phase, failures carrying the reason.

A phase's status maps to the outcome: PASS / PASS-with-mismatches / OK -> passed; FAIL ->
<failure>; INCOMPLETE / error -> <error>; skipped / not run -> <skipped>. CI systems then fail
the job on FAIL and ERROR, and show the reason inline.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from pathlib import Path

from ..results import Phase, PhaseStatus


def junit_document(suite: str, phases: list[Phase], properties: dict | None = None,
                   time_s: float | None = None) -> ET.ElementTree:
    """`time_s`: the suite's wall time where its cases ran side by side (a fleet); by default the
    sum of the cases' times (phases run one after another)."""
    failures = sum(1 for p in phases if p.status is PhaseStatus.FAIL)
    skipped = sum(1 for p in phases if p.status.skipped)
    errors = sum(1 for p in phases if not (p.status.passed or p.status.skipped or p.status is PhaseStatus.FAIL))
    total_time = sum(float(p.elapsed_s or 0) for p in phases) if time_s is None else float(time_s)
    counts = dict(tests=str(len(phases)), failures=str(failures), errors=str(errors), skipped=str(skipped),
                  time=f"{total_time:.3f}")
    root = ET.Element("testsuites", name="mlvalidate", **counts)
    ts = ET.SubElement(root, "testsuite", name=suite, **counts)
    if properties:
        props = ET.SubElement(ts, "properties")
        for k, v in properties.items():
            ET.SubElement(props, "property", name=str(k), value=str(v))
    for p in phases:
        status = p.status.value
        tc = ET.SubElement(ts, "testcase", classname=f"mlvalidate.{suite}", name=p.name,
                           time=f"{float(p.elapsed_s or 0):.3f}")
        detail = p.detail or status
        if p.status is PhaseStatus.FAIL:
            ET.SubElement(tc, "failure", message=detail, type="FAIL").text = detail
        elif p.status.skipped:
            ET.SubElement(tc, "skipped", message=detail)
        elif not p.status.passed:
            ET.SubElement(tc, "error", message=detail, type=status).text = detail
        ET.SubElement(tc, "system-out").text = f"{p.name}: {status} — {detail}"
    ET.indent(root)
    return ET.ElementTree(root)


def write_junit(path: str | Path, suite: str, phases: list[Phase], properties: dict | None = None,
                time_s: float | None = None) -> Path:
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    junit_document(suite, phases, properties, time_s).write(p, encoding="utf-8", xml_declaration=True)
    return p
