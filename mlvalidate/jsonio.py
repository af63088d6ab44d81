"""JSON in and out: one atomic writer for every file the harness writes, and one reader for
every JSON text that comes in (files and node answers), so that no document makes the
harness fail in a way it cannot explain in one line.

What can go wrong with JSON that parses: a document nested thousands of levels deep (Python's
parser gives up with RecursionError, and code that walks it would too), an integer past
Python's digit limit, and a string holding a lone UTF-16 surrogate (`"\\ud800"`): valid JSON,
but it cannot be written back as UTF-8 or printed. `loads` refuses the first two and names the
third where it is; `parse_answer` replaces lone surrogates with U+FFFD in what a node sent (its
text is evidence to keep and print, not a file to refuse).
"""

from __future__ import annotations

import itertools
import json
import os
import re
from pathlib import Path

MAX_DEPTH = 200  # far beyond any document the harness reads (references, bundles, configs: < 10)
_SURROGATE_ESCAPE = re.compile(r"\\u[dD][89abcdefABCDEF][0-9a-fA-F]{2}")  # how a surrogate gets into JSON text


class JsonProblem(ValueError):
    """A JSON text that cannot be used; the message is one line, without the file's name."""


def write_json(path: str | Path, doc, *, ensure_ascii: bool = False) -> Path:
    """`doc` as indented JSON plus a newline, written to a temporary file first and renamed
    into place, so a reader never sees half a file (and an interrupted write leaves the old one).
    A lone surrogate in a string (nothing the harness reads lets one through) is written as '?'
    rather than losing the file."""
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    tmp = p.with_name(p.name + ".tmp")
    text = json.dumps(doc, indent=2, ensure_ascii=ensure_ascii) + "\n"
    tmp.write_bytes(text.encode("utf-8", "replace"))
    os.replace(tmp, p)
    return p


def loads(text: str | bytes):
    """json.loads, with every way a text can be unusable as one JsonProblem: not UTF-8, not
    JSON (line and column), nested deeper than MAX_DEPTH, an integer too long to read, or a
    lone surrogate in a string (named by where it is)."""
    if isinstance(text, (bytes, bytearray)):
        try:
            text = bytes(text).decode("utf-8")
        except UnicodeDecodeError as e:
            raise JsonProblem(f"not UTF-8 text (byte 0x{text[e.start]:02x} at offset {e.start})") from None
    try:
        doc = json.loads(text)
    except json.JSONDecodeError as e:
        raise JsonProblem(f"not valid JSON ({e.msg} at line {e.lineno}, column {e.colno})") from None
    except RecursionError:
        raise JsonProblem("not a usable JSON document (nested too deeply to parse)") from None
    except ValueError as e:  # an integer literal past Python's digit limit
        raise JsonProblem(f"not a usable JSON document ({' '.join(str(e).split())[:120]})") from None
    where = document_problem(doc, strings=_SURROGATE_ESCAPE.search(text) is not None)
    if where:
        raise JsonProblem(where)
    return doc


def parse_answer(raw: bytes):
    """A node's answer body: its JSON, scrubbed (lone surrogates in strings become U+FFFD, so its
    text can be kept in a bundle and printed), or the body as text when it is not JSON or is
    nested deeper than MAX_DEPTH (a text is reported, never walked)."""
    text = raw.decode("utf-8", "replace")
    try:
        doc = json.loads(text or "null")
    except (ValueError, RecursionError):
        return text
    if document_problem(doc, strings=False):
        return f"(a JSON document nested deeper than {MAX_DEPTH} levels: {' '.join(text[:80].split())}…)"
    return _fix(doc) if _SURROGATE_ESCAPE.search(text) else doc


MAX_NODES = 10_000_000  # containers in one document (YAML aliases can make a small file a huge tree)


def document_problem(doc, *, strings: bool = True) -> str | None:
    """Why a decoded JSON or YAML document cannot be used, or None: nested deeper than
    MAX_DEPTH, more than MAX_NODES containers (an alias bomb or cycle), or (`strings`) a lone
    surrogate in a string, named by where it is."""
    level, depth, seen = ([doc] if type(doc) is dict or type(doc) is list else []), 1, 0
    while level:  # breadth first, a level at a time: C-speed for a reference's million entries
        if depth > MAX_DEPTH:
            return f"not a usable document (nested too deeply: more than {MAX_DEPTH} levels)"
        seen += len(level)
        if seen > MAX_NODES:
            return f"not a usable document (more than {MAX_NODES:,} objects and lists)"
        values = itertools.chain.from_iterable(n.values() if type(n) is dict else n for n in level)
        nested = (v for v in values if type(v) is dict or type(v) is list)
        level = list(itertools.islice(nested, MAX_NODES - seen + 1))  # never more than the budget held at once
        depth += 1
    return _surrogate_problem(doc) if strings else None


def _surrogate_problem(doc) -> str | None:
    """Where a string (key or value) holds a lone surrogate, or None (the depth is known to be bounded)."""
    stack = [(doc, "the document")]
    while stack:
        node, where = stack.pop()
        if isinstance(node, dict):
            for k, v in node.items():
                if isinstance(k, str) and _lone_surrogate(k):
                    return f"a key in {where} holds a lone UTF-16 surrogate (e.g. \\ud800): not text"
                stack.append((v, f"field {_name(k)}"))
        elif isinstance(node, list):
            stack.extend((v, where) for v in node)
        elif isinstance(node, str) and _lone_surrogate(node):
            return f"{where} holds a lone UTF-16 surrogate (e.g. \\ud800): not text"
    return None


def _name(key) -> str:
    text = repr(str(key).encode("utf-8", "backslashreplace").decode("utf-8"))
    return text if len(text) <= 60 else text[:59] + "…"


def _lone_surrogate(s: str) -> bool:
    try:
        s.encode("utf-8")
    except UnicodeEncodeError:
        return True
    return False


def _fix(node):
    """`node` with every surrogate code point in its strings replaced by U+FFFD (recursive: the
    caller has checked the depth)."""
    if isinstance(node, str):
        return "".join("\ufffd" if 0xD800 <= ord(c) <= 0xDFFF else c for c in node) if _lone_surrogate(node) else node
    if isinstance(node, dict):
        return {_fix(k): _fix(v) for k, v in node.items()}
    if isinstance(node, list):
        return [_fix(v) for v in node]
    return node
