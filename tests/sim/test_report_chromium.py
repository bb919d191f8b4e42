"""report.html in a real headless Chromium: the charts render, nothing errs, nothing is fetched."""

from __future__ import annotations

from .chromium import Page

CHARTS = """Array.from(document.querySelectorAll('svg.chart')).map(e => {
  const r = e.getBoundingClientRect();
  return {w: r.width, h: r.height, marks: e.querySelectorAll('rect,polyline,circle,line').length,
          title: e.querySelector('title').textContent};
})"""


def test_report_renders_its_charts_in_chromium(attacker_run, tmp_path):
    page_url = (attacker_run.report / "report.html").resolve().as_uri()
    with Page(page_url) as page:
        charts = page.evaluate(CHARTS)
        resources = page.evaluate("performance.getEntriesByType('resource').map(e => e.name)")
        page.screenshot(tmp_path / "report.png")
        errors = list(page.errors)
    assert len(charts) >= 3, charts
    for c in charts:
        assert c["w"] > 300 and c["h"] > 100, c
        assert c["marks"] > 1, c  # the background and at least one mark
    assert {c["title"] for c in charts} >= {"Latency over time (faults shaded)", "Cache hits vs issuer requests",
                                             "Outcomes by code", "The attacker's attempts"}
    assert errors == []
    assert resources == []  # readable offline: nothing loaded from anywhere
    assert (tmp_path / "report.png").stat().st_size > 10_000
