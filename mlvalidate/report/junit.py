"""JUnit XML for CI: one test case per phase, failures carrying the reason.

A phase's `status` maps to the outcome: PASS / PASS-with-mismatches / OK / done -> passed;
FAIL -> <failure>; INCOMPLETE / ERROR / anything unexpected -> <error>; skipped / not run ->
<skipped>. CI systems then fail the job on FAIL and ERROR, and show the reason inline.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from pathlib import Path

PASSED = {"PASS", "PASS-with-mismatches", "OK", "done"}
SKIPPED = {"skipped", "not run"}


def junit_document(suite: str, phases: list[dict], properties: dict | None = None) -> ET.ElementTree:
    failures = sum(1 for p in phases if p.get("status") == "FAIL")
    skipped = sum(1 for p in phases if p.get("status") in SKIPPED)
    errors = sum(1 for p in phases if p.get("status") not in PASSED | SKIPPED | {"FAIL"})
    total_time = sum(float(p.get("elapsed_s") or 0) for p in phases)
    root = ET.Element("testsuites", name="mlvalidate", tests=str(len(phases)), failures=str(failures),
                      errors=str(errors), skipped=str(skipped), time=f"{total_time:.3f}")
    ts = ET.SubElement(root, "testsuite", name=suite, tests=str(len(phases)), failures=str(failures),
                       errors=str(errors), skipped=str(skipped), time=f"{total_time:.3f}")
    if properties:
        props = ET.SubElement(ts, "properties")
        for k, v in properties.items():
            ET.SubElement(props, "property", name=str(k), value=str(v))
    for p in phases:
        status = str(p.get("status"))
        tc = ET.SubElement(ts, "testcase", classname=f"mlvalidate.{suite}", name=str(p.get("name")),
                           time=f"{float(p.get('elapsed_s') or 0):.3f}")
        detail = str(p.get("detail") or status)
        if status == "FAIL":
            ET.SubElement(tc, "failure", message=detail, type="FAIL").text = detail
        elif status in SKIPPED:
            ET.SubElement(tc, "skipped", message=detail)
        elif status not in PASSED:
            ET.SubElement(tc, "error", message=detail, type=status).text = detail
        ET.SubElement(tc, "system-out").text = f"{p.get('name')}: {status} — {detail}"
    ET.indent(root)
    return ET.ElementTree(root)


def write_junit(path: str | Path, suite: str, phases: list[dict], properties: dict | None = None) -> Path:
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    junit_document(suite, phases, properties).write(p, encoding="utf-8", xml_declaration=True)
    return p
