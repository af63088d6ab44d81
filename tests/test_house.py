"""House health: the import floors hold, there is no import circle, and modules stay small.

Every import of mlvalidate's own modules is read from the source (module level and inside
functions alike) with `ast`; a module may import only from its own floor or below:

  0  errors, progress, jsonio, shipped, poc/, rates (the PoC math, rates from counters: no I/O, no HTTP)
  1  artifacts, reference_lookup, results, http_client  (the reference schema and where references are
                                                   found, typed results, the HTTP client)
  2  engines/, weights/, fixtures/, hub/, serving/, chain, mlnode, throughput, server, bake, report/
  3  pipeline, fleet, fleet_nodes, fresh, demo, check, inspect_ref    (runs of the harness)
  4  commands/                                    (argument wiring, printing, exit codes)
  5  cli, __main__                                (assembly)
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PKG = Path(__file__).resolve().parent.parent / "mlvalidate"

FLOORS = {
    0: ["errors", "environ", "interrupts", "progress", "jsonio", "shipped", "defaults", "poc", "rates", "__init__"],
    1: ["artifacts", "reference_lookup", "results", "http_client"],
    2: ["engines", "weights", "fixtures", "hub", "serving", "chain", "mlnode", "throughput", "server", "bake",
        "report"],
    3: ["pipeline", "pipeline_inprocess", "fleet", "fleet_nodes", "fresh", "fresh_fleet", "demo", "check",
        "inspect_ref"],
    4: ["commands"],
    5: ["cli", "__main__"],
}
MAX_LINES = 420
LONG_MAX = 600  # not even a module in LONG_OK reaches this
# modules allowed to be longer, and why
LONG_OK = {
    "artifacts.py": "the golden schema's strict and lenient readers, stat-test resolution and writing in one place",
}


def modules() -> dict[str, Path]:
    return {".".join(p.relative_to(PKG).with_suffix("").parts): p for p in PKG.rglob("*.py")}


def floor(name: str) -> int:
    top = name.split(".")[0]
    for f, names in FLOORS.items():
        if top in names:
            return f
    raise AssertionError(f"mlvalidate.{name} has no floor in tests/test_house.py: place it")


def imports(name: str, path: Path) -> set[str]:
    """mlvalidate modules `name` imports (resolved to module names that exist)."""
    mods = modules()
    pkg_parts = name.split(".")[:-1] if path.name != "__init__.py" else name.split(".")
    out = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        targets = []
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = pkg_parts[: len(pkg_parts) - (node.level - 1)] if node.level > 1 else pkg_parts
                mod = ".".join([*base, *(node.module.split(".") if node.module else [])])
            elif node.module and node.module.startswith("mlvalidate"):
                mod = node.module.removeprefix("mlvalidate").lstrip(".")
            else:
                continue
            targets = [f"{mod}.{a.name}".strip(".") for a in node.names] + [mod]
        elif isinstance(node, ast.Import):
            targets = [a.name.removeprefix("mlvalidate").lstrip(".") for a in node.names
                       if a.name.startswith("mlvalidate")]
        for t in targets:
            if t in mods:
                out.add(t)
            elif f"{t}.__init__" in mods:
                out.add(f"{t}.__init__")
    out.discard(name)
    return out


def graph() -> dict[str, set[str]]:
    return {name: imports(name, path) for name, path in modules().items()}


def test_every_module_has_a_floor():
    for name in modules():
        floor(name)


def test_no_module_imports_from_a_higher_floor():
    bad = [f"{a} (floor {floor(a)}) imports {b} (floor {floor(b)})"
           for a, deps in graph().items() for b in deps if floor(b) > floor(a)]
    assert bad == []


def test_serving_and_the_readers_never_import_the_engines():
    """Within floor 2, serving/ (profiles, launch, hardware), weights/, hub/ and chain/ sit under the
    engines: serving/ once imported engines/http.py for its HTTP client (now http_client.py, floor 1)."""
    bad = [f"{a} imports {b}" for a, deps in graph().items() if a.split(".")[0] in ("serving", "weights", "hub", "chain")
           for b in deps if b.startswith("engines.")]
    assert bad == []


def test_no_import_circle():
    g = graph()
    # a package's __init__ re-exporting its submodules is not a circle with them
    g = {a: {b for b in deps if not (a.endswith("__init__") and b.startswith(a.removesuffix("__init__")))}
         for a, deps in g.items()}
    state: dict[str, int] = {}
    circles = []

    def visit(n: str, stack: list[str]) -> None:
        state[n] = 1
        for m in sorted(g.get(n, ())):
            if state.get(m) == 1:
                circles.append(" -> ".join(stack[stack.index(m):] + [m]) if m in stack else f"{n} -> {m}")
            elif m not in state:
                visit(m, stack + [m])
        state[n] = 2

    for n in sorted(g):
        if n not in state:
            visit(n, [n])
    assert circles == []


@pytest.mark.parametrize("name", sorted(modules()))
def test_modules_stay_small(name):
    path = modules()[name]
    n = len(path.read_text(encoding="utf-8").splitlines())
    assert n <= MAX_LINES or path.name in LONG_OK, f"{path.relative_to(PKG.parent)}: {n} lines"
    assert n < LONG_MAX, f"{path.relative_to(PKG.parent)}: {n} lines, even a module in LONG_OK stays under {LONG_MAX}"


def private_imports(name: str, source: str) -> list[str]:
    """`from X import _name` in `name`'s source where X is another mlvalidate module and `_name` is
    not a module of its own (commands/_common.py is a module; a helper called `_pct` is private)."""
    mods = modules()
    pkg_parts = name.split(".")[:-1]
    out = []
    for node in ast.walk(ast.parse(source)):
        if not isinstance(node, ast.ImportFrom):
            continue
        if node.level:
            base = pkg_parts[: len(pkg_parts) - (node.level - 1)] if node.level > 1 else pkg_parts
            mod = ".".join([*base, *(node.module.split(".") if node.module else [])])
        elif node.module and node.module.startswith("mlvalidate"):
            mod = node.module.removeprefix("mlvalidate").lstrip(".")
        else:
            continue
        for a in node.names:
            sub = f"{mod}.{a.name}".strip(".")
            if a.name.startswith("_") and not a.name.startswith("__") and sub not in mods and f"{sub}.__init__" not in mods:
                out.append(f"{name} imports {a.name} from {mod or 'mlvalidate'}")
    return out


def test_no_module_imports_private_names_of_another():
    """A helper another module needs is public (or moved): report/fleet_report.py once took
    compare's _md_table and bundles' _pct."""
    bad = [b for name, path in modules().items() for b in private_imports(name, path.read_text(encoding="utf-8"))]
    assert bad == []


def test_the_private_import_check_sees_one():
    """A negative control: the check is not vacuous, and it lets a private MODULE through."""
    src = "from .compare import _md_table\nfrom ..commands import _common\nfrom .bundles import pct_of\n"
    assert private_imports("report.fleet_report", src) == ["report.fleet_report imports _md_table from report.compare"]


def test_the_checker_sees_imports_inside_functions(tmp_path):
    """A negative control: the floor check is not vacuous."""
    g = graph()
    assert "pipeline" in g["commands.validate"]  # imported inside a function there
    assert "poc.intake" in g["engines.poc_http"]


def test_the_readme_lists_exactly_the_parsers_commands():
    """The README's command list points at --help; it must name every command and no other."""
    import re

    from mlvalidate.cli import build_parser

    parser = build_parser()
    sub = next(a for a in parser._actions if a.__class__.__name__ == "_SubParsersAction")
    readme = (PKG.parent / "README.md").read_text(encoding="utf-8")
    section = readme[readme.index("## Commands"):readme.index("\n## ", readme.index("## Commands") + 5)]
    listed = re.findall(r"^\| `([a-z-]+)` \|", section, re.M)
    assert listed == list(sub.choices), (listed, list(sub.choices))


def test_ci_runs_exactly_the_readmes_test_command():
    """.ci/run is the README's test command (chromium for the render tests, the install, the MLNode's venv, the
    suite) and nothing else but going to the repository root."""
    readme = (PKG.parent / "README.md").read_text(encoding="utf-8")
    block = readme[readme.index("```bash\n# tests:"):]
    command = block.split("\n")[2]
    assert command.endswith("python -m pytest -q") and "apt-get install -y -qq chromium" in command
    lines = [ln for ln in (PKG.parent / ".ci" / "run").read_text(encoding="utf-8").splitlines()
             if ln.strip() and not ln.startswith("#")]
    assert lines == ["set -euo pipefail", 'cd "$(dirname "$0")/.."', command]
