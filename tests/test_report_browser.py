"""report.html and MODEL_CARD.md as a reader sees them: rendered by headless Chromium (Debian's `chromium`,
which `.ci/run` installs), checked from the screenshot (the page is drawn), the DOM after load (the tables
are there) and a NetLog of the page's requests (none left the machine)."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest

from tests.pages import CHROMIUM, render

pytestmark = [
    pytest.mark.cli,  # starts a browser
    pytest.mark.skipif(CHROMIUM is None, reason="chromium is not installed (apt-get install chromium)"),
]


def drawn(pixels: np.ndarray) -> float:
    """The share of pixels that are not the white page background."""
    return float((pixels.min(axis=2) < 235).mean())


def test_the_network_check_sees_a_page_that_reaches_out(tmp_path: Path) -> None:
    """The check itself: a page with a remote image and a web font is caught (and still cannot connect)."""
    page = tmp_path / "leaky.html"
    page.write_text(
        '<html><body><p>x</p><img src="http://example.com/a.png">'
        '<link rel="stylesheet" href="https://fonts.googleapis.com/css?family=Roboto"></body></html>'
    )
    seen = render(page, tmp_path, size=(400, 300)).requests
    assert "http://example.com/a.png" in seen and "https://fonts.googleapis.com/css?family=Roboto" in seen


@pytest.mark.slow
def test_the_report_renders_with_its_tables_and_requests_nothing(trained_run: dict, tmp_path: Path) -> None:
    shown = render(trained_run["run"] / "report.html", tmp_path)
    assert shown.requests == []
    assert drawn(shown.screenshot) > 0.03  # text, tables and figures, not a blank page
    rows = shown.dom.tables["verdict-table"]
    assert [r[0] for r in rows[1:3]] == ["celebdf", "dfdc"]
    assert shown.dom.sections[:2] == ["verdict", "run"]
    assert all(img["src"].startswith("data:image/png") for img in shown.dom.images)


@pytest.mark.slow
def test_the_model_card_renders_as_html_with_its_results_table(trained_run: dict, tmp_path: Path) -> None:
    import markdown

    text = (trained_run["run"] / "MODEL_CARD.md").read_text(encoding="utf-8")
    body = re.sub(r"\A---\n.*?\n---\n", "", text, flags=re.DOTALL)  # the YAML front matter is metadata
    html = markdown.markdown(body, extensions=["tables", "fenced_code"])
    page = tmp_path / "card.html"
    page.write_text(f'<!DOCTYPE html><html><head><meta charset="utf-8"></head><body>{html}</body></html>')
    shown = render(page, tmp_path)
    assert shown.requests == [] and drawn(shown.screenshot) > 0.01
    results = next(rows for rows in shown.dom.tables.values() if rows[0][:2] == ["set", "images"])
    assert [r[0] for r in results[1:]] == ["celebdf", "dfdc"]
    assert "Out-of-Scope Use" in shown.dom.text and "Tested only on: celebdf (18 images)" in shown.dom.text
