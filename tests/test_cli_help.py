"""Every command's --help explains every option and shows each default once (issue 25, point 5).

The parser is mlvalidate.cli's own; every parser and sub-parser is walked (config list/show/check,
chain status ...). An option fails when it has no help, when its help shows a default twice
("(default: X) (default: None)"), or when it shows an empty one ("(default: None)", "(default: False)",
"(default: [])" say nothing a user can use).
"""

from __future__ import annotations

import argparse
import re

import pytest

from mlvalidate.cli import build_parser

EMPTY_DEFAULTS = ("(default: None)", "(default: False)", "(default: [])", "(default: )")


def parsers() -> list[tuple[str, argparse.ArgumentParser]]:
    out = []

    def walk(p: argparse.ArgumentParser, path: str) -> None:
        out.append((path, p))
        for a in p._actions:
            if isinstance(a, argparse._SubParsersAction):
                for name, sp in a.choices.items():
                    walk(sp, f"{path} {name}")

    walk(build_parser(), "mlvalidate")
    return out


def options(p: argparse.ArgumentParser) -> list[argparse.Action]:
    return [a for a in p._actions if not isinstance(a, (argparse._HelpAction, argparse._SubParsersAction))]


def shown_help(p: argparse.ArgumentParser, action: argparse.Action) -> str:
    """The option's help as --help prints it (defaults expanded), on one line."""
    return " ".join(p._get_formatter()._expand_help(action).split())


def name(action: argparse.Action) -> str:
    return "/".join(action.option_strings) or action.metavar or action.dest


PARSERS = parsers()


def test_the_walk_reaches_every_command_and_subcommand():
    """A control: the walk is not vacuous (the nested config and chain subcommands included)."""
    paths = {path for path, _ in PARSERS}
    assert {"mlvalidate validate", "mlvalidate serve", "mlvalidate bake", "mlvalidate config list",
            "mlvalidate config show", "mlvalidate config check", "mlvalidate chain status"} <= paths
    assert sum(len(options(p)) for _, p in PARSERS) > 150


@pytest.mark.parametrize("path,parser", PARSERS, ids=[path for path, _ in PARSERS])
def test_every_option_has_help(path, parser):
    missing = [name(a) for a in options(parser) if not (a.help or "").strip() or a.help is argparse.SUPPRESS]
    assert missing == [], f"{path}: options without help: {missing}"


@pytest.mark.parametrize("path,parser", PARSERS, ids=[path for path, _ in PARSERS])
def test_every_command_says_what_it_does(path, parser):
    """Each subcommand has a line in its parent's list and a description of its own (`config list --help`
    printed nothing but its usage)."""
    for a in parser._actions:
        if isinstance(a, argparse._SubParsersAction):
            silent = [c.dest for c in a._choices_actions if not (c.help or "").strip()]
            assert silent == [], f"{path}: subcommands without a line in the list: {silent}"
    assert (parser.description or "").strip(), f"{path} --help has no description"


@pytest.mark.parametrize("path,parser", PARSERS, ids=[path for path, _ in PARSERS])
def test_no_option_shows_two_defaults_or_an_empty_one(path, parser):
    bad = []
    for a in options(parser):
        text = shown_help(parser, a)
        if any(e in text for e in EMPTY_DEFAULTS):
            bad.append(f"{name(a)}: {text!r}")
        written = " ".join((a.help or "").split())
        added = text[len(written):] if text.startswith(written) else ""
        if "(default:" in added and re.search(r"\bdefault\b", written, re.I):
            bad.append(f"{name(a)} shows a default its help already gives: {text!r}")
    assert bad == [], f"{path}: " + "; ".join(bad)


@pytest.mark.parametrize("path,parser", PARSERS, ids=[path for path, _ in PARSERS])
def test_the_printed_help_never_repeats_a_default(path, parser):
    """The text a user reads (wrapped as printed): no "(default: X) (default: Y)", no empty default."""
    text = " ".join(parser.format_help().split())
    assert not re.search(r"\(default:[^()]*\)\s*\(default:", text), path
    assert not [e for e in EMPTY_DEFAULTS if e in text], path


def test_a_useful_default_is_still_shown_once():
    """The formatter still shows real defaults (a help that lost every default would pass the rest)."""
    by_path = dict(PARSERS)
    serve = by_path["mlvalidate serve"]
    port = next(a for a in options(serve) if "--port" in a.option_strings)
    assert shown_help(serve, port).endswith("(default: 8000)")
    validate = by_path["mlvalidate validate"]
    batch = next(a for a in options(validate) if "--batch-size" in a.option_strings)
    assert shown_help(validate, batch).count("(default: 32)") == 1
    out = next(a for a in options(validate) if "--out" in a.option_strings)
    assert shown_help(validate, out).count("default") == 1  # its help names the folder; no "(default: None)"
