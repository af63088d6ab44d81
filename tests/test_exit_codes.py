"""Every command follows the README's exit-code rule — 0 PASS, 1 FAIL (fraud proven, and nothing
else), 2 error or incomplete — or its --help says what its codes mean. Walks every (sub)command
of the real parser: each states its exit codes in its own description or its parent's, and a
code 1 is only ever fraud. `compare`'s codes follow its runs' verdicts (tests/test_compare.py runs
them); the others' behaviour is tested with the command."""

from __future__ import annotations

import argparse
import re

from mlvalidate.cli import build_parser


def _leaves(parser: argparse.ArgumentParser, path=(), parents=()):
    subs = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    if not subs:
        yield " ".join(path), parser, parents
        return
    for name, sub in subs[0].choices.items():
        yield from _leaves(sub, (*path, name), (*parents, parser))


def _statement(parser, parents) -> str:
    """The exit codes a command's help states: its description's, else its parent command's."""
    for p in (parser, *reversed(parents[1:])):
        m = re.search(r"(?i)\bexit( codes?\b[^\n]*|\s+0\b[^\n]*)", p.description or "")
        if m:
            return m.group(0)
    return ""


def test_every_command_states_its_exit_codes_and_1_is_only_fraud():
    leaves = list(_leaves(build_parser()))
    names = {name for name, _, _ in leaves}
    assert {"validate", "run", "fleet", "compare", "check", "demo", "serve", "config list", "config check",
            "chain status", "hw", "pull", "verify-weights", "launch", "inspect", "bake", "make-tiny"} <= names
    missing = [name for name, parser, parents in leaves if not _statement(parser, parents)]
    assert missing == [], f"commands whose --help states no exit codes: {missing}"
    for name, parser, parents in leaves:
        said = _statement(parser, parents)
        for m in re.finditer(r"(?<![\w.])1\b(?!\s*(?:of|node|replica|s\b|x\b))([^;,.]*)", said):
            assert re.search(r"FAIL|fraud", m.group(1)), f"{name}: exit 1 is said to mean {m.group(0)!r}"


def test_the_top_level_help_states_the_rule():
    text = build_parser().format_help()
    assert "0 PASS" in text and "1 FAIL (fraud detected)" in text and "2 error or incomplete" in text
