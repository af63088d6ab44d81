"""JUnit XML: one test case per phase; FAIL is a failure, INCOMPLETE an error, skips skipped."""

import xml.etree.ElementTree as ET

from mlvalidate.report.junit import write_junit
from mlvalidate.results import Phase, PhaseStatus as S


def test_one_case_per_phase_with_reasons(tmp_path):
    phases = [
        Phase("throughput", S.PASS, 61.5, "spot-check 40 nonces"),
        Phase("validate", S.FAIL, 12.0, "187/200 mismatches, p=2e-168"),
        Phase("download", S.SKIPPED, None, "--skip-download"),
        Phase("deploy", S.INCOMPLETE, 1, "node error: HTTP 503"),
    ]
    path = write_junit(tmp_path / "j.xml", "validate", phases, {"model": "MiniMaxAI/MiniMax-M2.7"})
    root = ET.parse(path).getroot()
    suite = root.find("testsuite")
    assert (suite.get("tests"), suite.get("failures"), suite.get("errors"), suite.get("skipped")) == ("4", "1", "1", "1")
    cases = {c.get("name"): c for c in suite.findall("testcase")}
    assert list(cases) == ["throughput", "validate", "download", "deploy"]
    assert cases["throughput"].find("failure") is None and cases["throughput"].get("time") == "61.500"
    assert cases["validate"].find("failure").get("message") == "187/200 mismatches, p=2e-168"
    assert cases["download"].find("skipped") is not None
    assert cases["deploy"].find("error").get("type") == "INCOMPLETE"
    assert suite.find("properties/property").get("value") == "MiniMaxAI/MiniMax-M2.7"


def test_all_passed_has_no_failures(tmp_path):
    path = write_junit(tmp_path / "j.xml", "demo", [Phase("honest", S.PASS_WITH_MISMATCHES)])
    suite = ET.parse(path).getroot().find("testsuite")
    assert suite.get("failures") == "0" and suite.get("errors") == "0"
    assert suite.find("testcase/failure") is None and suite.find("testcase/error") is None
