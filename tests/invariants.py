"""What every run of the harness must show, whatever it was given (issue 22): at most one line
on stderr that is not a progress line, and it says `error: ...`; never a traceback; never
"internal error" (a bug that a safety net caught is still a bug)."""

from __future__ import annotations

import re

PROGRESS = re.compile(r"^\s+\S.*: \d+/\d+ \w+ \(")  # progress.Progress's plain lines: "  validate: 8/24 nonces (..."


def problem_lines(err: str) -> list[str]:
    """stderr without its progress lines."""
    return [line for line in err.splitlines() if line.strip() and not PROGRESS.match(line)]


def assert_clean(out: str, err: str, rc: int | None = None) -> None:
    text = out + err
    assert "Traceback" not in text and "internal error" not in text, text[-3000:]
    lines = problem_lines(err)
    assert len(lines) <= 1, err[-3000:]
    assert all(line.startswith("error: ") for line in lines), err[-3000:]
    if rc is not None:
        assert rc in (0, 1, 2), rc
        if rc == 2 and lines == []:
            pass  # a verdict that is not PASS (INCOMPLETE) may say so on stdout only
