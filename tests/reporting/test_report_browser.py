"""The report renders in a real browser (headless Chromium): every figure div gets plotly's
SVG, and the console shows no uncaught script error. A page with the plotly bundle removed
must fail both checks, which shows the checks can fail."""

from __future__ import annotations

import re
from pathlib import Path

from tests.reporting.conftest import GRAPH_DIV_RE, STUDY, build_study


def _rendered_divs(dom: str, ids: list[str]) -> dict[str, int]:
    """For each figure div id: how many plotly SVG roots ended up inside it (0 = not drawn)."""
    starts = [dom.find(f'id="{div_id}"') for div_id in ids]
    bounds = [*starts[1:], len(dom)]
    counts = {}
    for div_id, start, end in zip(ids, starts, bounds, strict=True):
        drawn = start >= 0 and re.match(
            rf'id="{div_id}" class="plotly-graph-div js-plotly-plot"', dom[start:]) is not None
        counts[div_id] = dom[start:end].count('class="main-svg"') if drawn else 0
    return counts


def _uncaught(log: str) -> list[str]:
    return [line for line in log.splitlines() if "Uncaught" in line]


def test_report_renders_every_plot_without_script_errors(tmp_path: Path, sqlite_url: str,
                                                          launch, render):
    build_study(sqlite_url)
    out = tmp_path / "report.html"
    assert launch("report", "--study", STUDY, "--storage", sqlite_url, "--out", out).exit_code == 0
    page = out.read_text(encoding="utf-8")
    ids = GRAPH_DIV_RE.findall(page)
    assert len(ids) == 4  # history, importances, parallel coordinates, intermediate values

    dom, log = render(out)
    assert _uncaught(log) == []
    counts = _rendered_divs(dom, ids)
    assert all(n >= 1 for n in counts.values()), counts

    # Control: the same page without the inline plotly.js draws nothing and logs errors.
    head = '<script type="text/javascript">'
    start = page.index(head) + len(head)
    broken = tmp_path / "broken.html"
    broken.write_text(page[:start] + page[page.index("</script>", start):], encoding="utf-8")
    dom, log = render(broken)
    assert any("Plotly is not defined" in line for line in _uncaught(log)), log[-2000:]
    assert set(_rendered_divs(dom, ids).values()) == {0}
