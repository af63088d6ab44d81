"""An HTML report as headless Chromium lays it out in a 1280 x 900 window (no network: the page
is a local file with data-URI images). `layout(page)` loads a copy of the page with a script
added that measures it after load and writes the measurements into the DOM, which Chromium's
--dump-dom prints: the window, the document's width and height, every table's and image's box,
every cell that overflows its box, every no-wrap cell or figure (p-values, verdicts, counts, a
figures table's numbers and their rank lines) that takes more than one line, each verdict cell's computed colour, the head's box, and the largest gap
between two blocks of the page. `screenshot(page, png, height)` keeps a picture for a person.
The report itself carries no script; only the measured copy does."""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path

CHROMIUM = Path("/usr/bin/chromium")
WIDTH, HEIGHT = 1280, 900
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync", "--hide-scrollbars"]

MEASURE = r"""
<script>
window.addEventListener('load', () => {
  const box = e => { const r = e.getBoundingClientRect(); return {left: r.left, right: r.right, top: r.top + scrollY,
                                                                  bottom: r.bottom + scrollY, width: r.width}; };
  const lines = e => {  // line boxes: text rects whose vertical extents do not overlap start a new line
    const rg = document.createRange(); rg.selectNodeContents(e);
    const rs = [...rg.getClientRects()].filter(r => r.width > 0 && r.height > 0).sort((a, b) => a.top - b.top);
    let n = 0, bottom = -Infinity;
    for (const r of rs) { if (r.top >= bottom - 1) { n += 1; bottom = r.bottom; } else bottom = Math.max(bottom, r.bottom); }
    return n; };
  const text = e => e.textContent.trim().slice(0, 80);
  const out = {window: [innerWidth, innerHeight], doc_width: document.documentElement.scrollWidth,
               doc_height: document.documentElement.scrollHeight, tables: [], images: [], overflow: [],
               broken: [], verdicts: [], blocks: []};
  document.querySelectorAll('table').forEach(t => out.tables.push({cls: t.className, ...box(t)}));
  document.querySelectorAll('img').forEach(i => out.images.push({alt: i.alt, natural: [i.naturalWidth, i.naturalHeight],
                                                                  cls: i.className, ...box(i)}));
  document.querySelectorAll('td, th').forEach(c => {
    if (c.scrollWidth > c.clientWidth + 1) out.overflow.push(text(c));
    if (c.classList.contains('tok') && lines(c) > 1) out.broken.push(text(c));
  });
  document.querySelectorAll('td span.tok').forEach(s => { if (lines(s) > 1) out.broken.push(text(s)); });
  document.querySelectorAll('td.verdict, .badge').forEach(c => out.verdicts.push(
    {text: text(c), color: getComputedStyle(c).backgroundColor}));
  const head = document.getElementById('run-facts');
  out.head = head ? {...box(head), text: head.textContent} : null;
  [...document.body.children].forEach(e => { const b = box(e); if (b.bottom > b.top) out.blocks.push(b); });
  const p = document.createElement('pre'); p.id = 'mlvalidate-layout'; p.textContent = JSON.stringify(out);
  document.body.appendChild(p);
});
</script>
"""


def _run(args: list[str], profile: Path, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run([str(CHROMIUM), *FLAGS, f"--user-data-dir={profile}", *args], capture_output=True,
                          text=True, timeout=timeout)


def layout(page: Path, work: Path) -> dict:
    """The measurements of `page` at 1280 px wide (module docstring)."""
    copy = work / "measured.html"
    html = page.read_text(encoding="utf-8")
    copy.write_text(html.replace("</body>", MEASURE + "</body>"), encoding="utf-8")
    proc = _run([f"--window-size={WIDTH},{HEIGHT}", "--dump-dom", copy.resolve().as_uri()], work / "profile")
    m = re.search(r'<pre id="mlvalidate-layout">(.*?)</pre>', proc.stdout, re.S)
    assert m, f"Chromium gave no layout (rc {proc.returncode}): {proc.stderr[-800:]}"
    import html as _html

    return json.loads(_html.unescape(m.group(1)))


def screenshot(page: Path, png: Path, work: Path, height: int = HEIGHT) -> Path:
    proc = _run([f"--window-size={WIDTH},{height}", f"--screenshot={png}", page.resolve().as_uri()], work / "profile")
    assert png.exists(), f"no screenshot (rc {proc.returncode}): {proc.stderr[-800:]}"
    return png


def largest_gap(blocks: list[dict]) -> float:
    """The tallest stretch of the page between two consecutive blocks with nothing in it."""
    gap, bottom = 0.0, None
    for b in sorted(blocks, key=lambda b: b["top"]):
        if bottom is not None:
            gap = max(gap, b["top"] - bottom)
        bottom = b["bottom"] if bottom is None else max(bottom, b["bottom"])
    return gap


def rgb(hex_color: str) -> str:
    h = hex_color.lstrip("#")
    return f"rgb({int(h[0:2], 16)}, {int(h[2:4], 16)}, {int(h[4:6], 16)})"


def check_page_at_1280(page: Path, work: Path, shot_name: str) -> dict:
    """What both reports must hold in a 1280 x 900 window (tests/render_check.py measures it in
    Chromium): nothing wider than the window, no cell whose content is cut, no p-value, verdict or
    count broken over two lines, every verdict in its one colour, the head (reference, model, stat
    test, harness, run time) on the first screen, the ECDF at the page's width, no stretch of the
    page over 120 px with nothing in it. Keeps a screenshot in $MLVALIDATE_SHOTS (default: the
    test's tmp folder) for a person to look at."""
    import os

    from mlvalidate.report.bundles import VERDICT_COLOR

    lay = layout(page, work)
    assert lay["window"][0] == WIDTH
    assert lay["doc_width"] <= WIDTH, f"the page is {lay['doc_width']} px wide"
    assert all(t["right"] <= WIDTH for t in lay["tables"]), [t for t in lay["tables"] if t["right"] > WIDTH]
    assert lay["overflow"] == [], f"cells whose content does not fit: {lay['overflow']}"
    assert lay["broken"] == [], f"numbers or verdicts broken over lines: {lay['broken']}"
    for v in lay["verdicts"]:
        assert v["color"] == rgb(VERDICT_COLOR[v["text"]]), v
    head = lay["head"]
    assert head is not None and head["bottom"] < 900, head
    for word in ("reference", "model", "stat test", "dist_threshold", "harness", "mlvalidate", "run time"):
        assert word in head["text"], word
    body = max(t["right"] for t in lay["tables"]) - min(t["left"] for t in lay["tables"])
    ecdf = [i for i in lay["images"] if i["alt"].startswith("distance distributions")]
    if ecdf:
        assert ecdf[0]["width"] >= 0.95 * body, (ecdf[0], body)  # the page's width, not a third of it
    for plot in lay["images"]:  # every plot (the ECDF, throughput, throughput vs energy) spans the page
        assert "wide" not in plot["cls"].split() or plot["width"] >= 0.95 * body, (plot, body)
    assert largest_gap(lay["blocks"]) <= 120, "a large blank stretch"
    keep = Path(os.environ.get("MLVALIDATE_SHOTS") or work)
    keep.mkdir(parents=True, exist_ok=True)
    screenshot(page, keep / f"{shot_name}-1280x900.png", work)
    screenshot(page, keep / f"{shot_name}-full.png", work, height=min(int(lay["doc_height"]) + 40, 8000))
    return lay
