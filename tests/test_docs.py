"""The documents the code cites are in docs/ and have the sections it cites.

* Every section citation in mlvalidate/ ("spec §3.6", "docs/poc-v2.md §5.1", "MINIMAX_M2.md §4,
  §5", "§3 step 9", "§1-§3", a bare "§2.1") resolves to a heading of the cited document in
  docs/. A reference with no document named before it on its line means docs/poc-v2.md —
  the convention of mlvalidate/poc, mlvalidate/engines and mlvalidate/server.py.
* No citation names a document that is not in the repository.
* The known answers the tests use (docs/poc-v2.md §9) and the chain values the code reads from
  configs/chain/ are written in the documents with the same numbers.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
CITING_ROOTS = ("mlvalidate",)  # where citations are collected

DOC_FILES = {
    "poc": DOCS / "poc-v2.md",
    "minimax": DOCS / "minimax-m2.md",
    "chain": DOCS / "chain-api.md",
}

# a document named in a comment, old or new name -> key of DOC_FILES
_DOC_NAMES = [
    (r"(?<![\w/-])(?:docs/)?poc-v2\.md", "poc"),
    (r"\bPOC_V2_SPEC(?:\.md)?", "poc"),
    (r"\bspec\b", "poc"),
    (r"\bMINIMAX_M2\.md", "minimax"),
    (r"(?<![\w-])(?:docs/)?minimax-m2(?:\.md)?(?![\w.-])", "minimax"),
    (r"\bCHAIN_API\.md", "chain"),
    (r"(?<![\w/-])(?:docs/)?chain-api\.md", "chain"),
]
_SEC = r"\d+(?:\.(?:\d+|x))?"
_TOKEN = re.compile(
    "|".join(f"(?P<d{i}>{pat})" for i, (pat, _) in enumerate(_DOC_NAMES))
    + rf"|§\s?(?P<sec>{_SEC})"
    + r"(?:\s+steps?\s+(?P<step>\d+)(?:\s*[-–]\s*(?P<step2>\d+))?)?"
    + rf"(?:\s*[-–]\s*§?(?P<sec2>{_SEC}))?"
)
_HEADING = re.compile(r"^#{1,6}\s+(?:§\s*)?(\d+(?:\.(?:\d+|x))*)\.?(?:\s|$)")


def _span(a: str, b: str) -> list[str]:
    """'1'-'3' -> 1, 2, 3; '3.5'-'3.9' -> 3.5 ... 3.9; anything else -> both ends."""
    pa, pb = a.split("."), b.split(".")
    if len(pa) == len(pb) and pa[:-1] == pb[:-1] and pa[-1].isdigit() and pb[-1].isdigit():
        lo, hi = int(pa[-1]), int(pb[-1])
        if lo <= hi:
            return [".".join(pa[:-1] + [str(i)]) for i in range(lo, hi + 1)]
    return [a, b]


def citations_in_line(line: str) -> list[tuple[str, str]]:
    """(document key, section) for every § reference on one line."""
    doc, out = "poc", []
    for m in _TOKEN.finditer(line):
        if m.group("sec") is None:
            doc = next(_DOC_NAMES[i][1] for i in range(len(_DOC_NAMES)) if m.group(f"d{i}"))
            continue
        sec = m.group("sec")
        secs = _span(sec, m.group("sec2")) if m.group("sec2") else [sec]
        if m.group("step"):
            last = m.group("step2") or m.group("step")
            secs += _span(f"{sec}.{m.group('step')}", f"{sec}.{last}")
        out += [(doc, s) for s in secs]
    return out


def _citing_files() -> list[Path]:
    files = []
    for root in CITING_ROOTS:
        files += [p for p in sorted((ROOT / root).rglob("*")) if p.is_file() and p.suffix in (".py", ".md", ".yaml", ".txt")]
    return files


def all_citations() -> list[tuple[str, int, str, str]]:
    """(file, line number, document key, section) over CITING_ROOTS."""
    found = []
    for path in _citing_files():
        for no, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
            for doc, sec in citations_in_line(line):
                found.append((str(path.relative_to(ROOT)), no, doc, sec))
    return found


def headings(doc: str) -> set[str]:
    text = DOC_FILES[doc].read_text(encoding="utf-8")
    return {m.group(1) for line in text.splitlines() if (m := _HEADING.match(line))}


# ----------------------------------------------------------------------------------------
# the citation parser itself
# ----------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "line, expected",
    [
        ("spec §1.4  inputs_embeds", [("poc", "1.4")]),
        ("(spec §2.2, §3)", [("poc", "2.2"), ("poc", "3")]),
        ("(spec §3 step 9)", [("poc", "3"), ("poc", "3.9")]),
        ("# §3 steps 5-9: poc_vectors", [("poc", "3")] + [("poc", f"3.{i}") for i in range(5, 10)]),
        ("# §3.5-3.9 the whole post-processing", [("poc", f"3.{i}") for i in range(5, 10)]),
        ("(MINIMAX_M2.md §4, §5).", [("minimax", "4"), ("minimax", "5")]),
        ("(see MINIMAX_M2.md §1-§3)", [("minimax", "1"), ("minimax", "2"), ("minimax", "3")]),
        ("docs/minimax-m2.md §4.1 and docs/poc-v2.md §8.x", [("minimax", "4.1"), ("poc", "8.x")]),
        ("read artifacts/minimaxai-minimax-m2.7.json §6", [("poc", "6")]),
        ('MINIMAX_M2 = "minimax_m2"', []),
    ],
)
def test_citation_parser(line, expected):
    assert citations_in_line(line) == expected


def test_headings_parser():
    assert {"1", "1.4", "3.9", "5.1", "8.x", "9"} <= headings("poc")
    assert {"1", "2", "3", "4", "4.1", "5"} <= headings("minimax")


# ----------------------------------------------------------------------------------------
# (1) every cited section exists
# ----------------------------------------------------------------------------------------
def test_docs_exist():
    for path in [*DOC_FILES.values(), DOCS / "README.md"]:
        assert path.is_file(), f"{path.relative_to(ROOT)} is missing"


def test_code_cites_sections():
    """A sanity floor: if this drops to nothing the parser (or the code) changed."""
    cites = all_citations()
    assert len([c for c in cites if c[2] == "poc"]) >= 30
    assert len([c for c in cites if c[2] == "minimax"]) >= 8


def test_every_cited_section_has_a_heading():
    have = {doc: headings(doc) for doc in DOC_FILES}
    missing = [f"{f}:{no}: {DOC_FILES[doc].relative_to(ROOT)} §{sec}"
               for f, no, doc, sec in all_citations() if sec not in have[doc]]
    assert not missing, "cited sections without a heading:\n" + "\n".join(missing)


def test_poc_doc_keeps_the_spec_numbering():
    """The section numbers the code was written against: §1-§9 with these sub-sections."""
    want = {str(i) for i in range(1, 10)}
    want |= {f"1.{i}" for i in range(1, 7)} | {"2.1", "2.2", "2.3"} | {f"3.{i}" for i in range(1, 11)}
    want |= {"5.1", "5.2", "5.3", "8.x"} | {f"8.{i}" for i in range(1, 13)}
    assert want <= headings("poc")
    assert {"1", "2", "3", "4", "4.1", "5"} <= headings("minimax")


# ----------------------------------------------------------------------------------------
# (2) no citation names a document outside the repository
# ----------------------------------------------------------------------------------------
_MD_NAME = re.compile(r"(?<![\w./-])((?:[\w.-]+/)*[\w-]+\.md)\b(?P<cited>\s*§)?")


def _is_citation(m: re.Match) -> bool:
    """A document citation, not an output file name such as report.md: a section follows, the
    name is an upper-case document name (POC_V2_SPEC.md, README.md), or it is under docs/."""
    name = m.group(1)
    base = name.rsplit("/", 1)[-1]
    return bool(m.group("cited")) or base[:-3].isupper() or name.startswith("docs/")


def _repo_markdown() -> tuple[set[str], set[str]]:
    paths = {p.relative_to(ROOT).as_posix() for p in ROOT.rglob("*.md") if ".git" not in p.parts}
    return paths, {p.rsplit("/", 1)[-1] for p in paths}


@pytest.mark.parametrize(
    "line, cited",
    [
        ("checkable against POC_V2_SPEC.md line by line", ["POC_V2_SPEC.md"]),
        ("(MINIMAX_M2.md §4)", ["MINIMAX_M2.md"]),
        ("see docs/poc-v2.md §3.6 and README.md", ["docs/poc-v2.md", "README.md"]),
        ("writes report.md and report.html", []),
    ],
)
def test_document_name_parser(line, cited):
    assert [m.group(1) for m in _MD_NAME.finditer(line) if _is_citation(m)] == cited


def test_no_citation_names_a_missing_document():
    paths, names = _repo_markdown()
    bad = []
    for path in _citing_files():
        for no, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
            for m in _MD_NAME.finditer(line):
                name = m.group(1)
                if _is_citation(m) and name not in paths and name not in names:
                    bad.append(f"{path.relative_to(ROOT)}:{no}: {name}")
    assert not bad, "citations of documents not in the repository:\n" + "\n".join(bad)


# ----------------------------------------------------------------------------------------
# (3) the numbers the tests and configs use are the documents' numbers
# ----------------------------------------------------------------------------------------
def _section(doc: str, number: str) -> str:
    """Text of section `number` of a document, up to the next heading of the same or higher level."""
    lines = DOC_FILES[doc].read_text(encoding="utf-8").splitlines()
    start = level = None
    for i, line in enumerate(lines):
        m = _HEADING.match(line)
        if m and start is None and m.group(1) == number:
            start, level = i, len(line) - len(line.lstrip("#"))
        elif start is not None and line.startswith("#") and len(line) - len(line.lstrip("#")) <= level:
            return "\n".join(lines[start:i])
    assert start is not None, f"no §{number}"
    return "\n".join(lines[start:])


def test_poc_section_9_holds_the_known_answers():
    s9 = _section("poc", "9")
    for value in ["637511061", "2641148671", "2284659359",
                  "-0.21936409", "-1.3785563", "-0.026249096", "-2.458792",
                  "-0.010564069", "-0.12228636", "0.24713299",
                  "[127, 602, 1332, 1335, 1515, 1619, 1667, 2186, 2213, 2784, 2851, 2671]",
                  "0.0672", "0.0434"]:
        assert value in s9, value
    assert re.search(r"\|\s*200\s*\|\s*0\.1\s*\|\s*0\.05\s*\|\s*28\b", s9)
    assert re.search(r"\|\s*200\s*\|\s*0\.001\s*\|\s*0\.01\s*\|\s*3\b", s9)
    assert re.search(r"\|\s*1000\s*\|\s*0\.1\s*\|\s*0\.05\s*\|\s*117\b", s9)


def test_minimax_doc_matches_the_chain_config():
    chain = yaml.safe_load((ROOT / "configs/chain/minimaxai-minimax-m2.7.yaml").read_text(encoding="utf-8"))
    s1 = _section("minimax", "1")
    assert chain["hf_repo"] in s1 and chain["hf_commit"] in s1
    args = chain["model_args"]
    i = 0
    while i < len(args):  # each flag with its value, as the doc writes them
        flag = args[i]
        if i + 1 < len(args) and not args[i + 1].startswith("--"):
            flag, i = f"{flag} {args[i + 1]}", i + 1
        assert f"`{flag}`" in s1, flag
        i += 1
    st = chain["stat_test"]
    assert f"dist_threshold {st['dist_threshold']}" in s1
    assert f"{st['p_mismatch']:.2f}" in s1 and f"{st['fraud_threshold']}" in s1
    assert f"seq_len {chain['poc']['seq_len']}, k_dim {chain['poc']['k_dim']}" in s1
    assert f"from epoch {chain['punishment']['from_epoch']}" in s1
    assert f"{chain['snapshot']['blocks_before_poc_start']} blocks" in s1
    assert f"{chain['vram_per_instance_gb']} GB" in s1
    assert f"{chain['weights']['size_gib']} GiB" in s1 and f"{chain['weights']['num_shards']} safetensors" in s1


def test_poc_doc_matches_the_golden_reference():
    import json

    ref = json.loads((ROOT / "artifacts/minimaxai-minimax-m2.7.json").read_text(encoding="utf-8"))
    s6 = _section("poc", "6")
    for key in ("model", "block_hash", "public_key", "generated_at", "source"):
        assert f"`{ref[key]}`" in s6, key
    for key in ("seq_len", "k_dim", "block_height", "dist_threshold"):
        assert f"| {ref[key]} |" in s6, key
    assert f"p_mismatch: {ref['stat_test']['p_mismatch']}, fraud_threshold: {ref['stat_test']['fraud_threshold']}" in s6
    assert f"{len(ref['artifacts'])} ×" in s6
