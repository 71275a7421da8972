"""Reading report pages back: an HTML parser for the DOM, and headless Chromium for what a browser shows.

`Page` collects what the report tests assert on (section order, tables as cell text, images, every URL an
attribute names). `render` opens a page in Debian's headless Chromium with every host unresolvable and a NetLog
of its network activity, and returns the DOM after load, the screenshot and the URLs the page itself requested
(Chromium's own background requests, which carry no page origin, are not the page's).
"""

from __future__ import annotations

import json
import shutil
import subprocess
from dataclasses import dataclass, field
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
from PIL import Image

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
FLAGS = (
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
    "--host-resolver-rules=MAP * ~NOTFOUND",  # nothing can leave the machine, whatever the page asks for
)  # fmt: skip
URL_ATTRIBUTES = ("src", "href", "srcset", "action", "poster", "data", "background")


@dataclass
class Page:
    sections: list[str] = field(default_factory=list)  # <section id=...> in document order
    tables: dict[str, list[list[str]]] = field(default_factory=dict)  # table id -> rows of cell text
    images: list[dict[str, str]] = field(default_factory=list)  # each <img>'s attributes
    urls: list[str] = field(default_factory=list)  # every URL-bearing attribute's value
    tags: set[str] = field(default_factory=set)
    text: str = ""


class _Parser(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.page = Page()
        self.table: list[list[str]] | None = None
        self.cell: list[str] | None = None
        self.chunks: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = {k: v or "" for k, v in attrs}
        self.page.tags.add(tag)
        self.page.urls += [a[k] for k in URL_ATTRIBUTES if k in a]
        if tag == "section" and "id" in a:
            self.page.sections.append(a["id"])
        elif tag == "table":
            self.table = self.page.tables.setdefault(a.get("id") or f"table{len(self.page.tables)}", [])
        elif tag == "tr" and self.table is not None:
            self.table.append([])
        elif tag in ("td", "th") and self.table is not None:
            self.cell = []
        elif tag == "img":
            self.page.images.append(a)

    def handle_endtag(self, tag: str) -> None:
        if tag in ("td", "th") and self.cell is not None and self.table:
            self.table[-1].append(" ".join("".join(self.cell).split()))
            self.cell = None
        elif tag == "table":
            self.table = None

    def handle_data(self, data: str) -> None:
        self.chunks.append(data)
        if self.cell is not None:
            self.cell.append(data)


def parse(html: str) -> Page:
    parser = _Parser()
    parser.feed(html)
    parser.page.text = " ".join("".join(parser.chunks).split())
    return parser.page


@dataclass
class Rendered:
    dom: Page
    screenshot: np.ndarray  # RGB
    requests: list[str]  # URLs the page requested over the network stack


def render(page: Path, workdir: Path, size: tuple[int, int] = (1280, 1600)) -> Rendered:
    """Load `page` (a file) in headless Chromium: its DOM after load, a screenshot, its network requests."""
    assert CHROMIUM is not None
    netlog, shot = workdir / "netlog.json", workdir / "shot.png"
    proc = subprocess.run(
        [CHROMIUM, *FLAGS, f"--user-data-dir={workdir / 'profile'}", f"--log-net-log={netlog}",
         f"--screenshot={shot}", f"--window-size={size[0]},{size[1]}", "--dump-dom", page.resolve().as_uri()],
        capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert proc.returncode == 0 and shot.is_file(), proc.stderr[-2000:]
    with Image.open(shot) as image:
        pixels = np.asarray(image.convert("RGB"))
    return Rendered(parse(proc.stdout), pixels, page_requests(json.loads(netlog.read_text())))


def page_requests(netlog: dict) -> list[str]:
    """URLs of the URL requests a file:// page started (their network isolation key names the file origin)."""
    types = {v: k for k, v in netlog["constants"]["logEventTypes"].items()}
    return [
        e["params"]["url"]
        for e in netlog["events"]
        if types.get(e["type"]) == "URL_REQUEST_START_JOB"
        and "url" in e.get("params", {})
        and "file://" in e["params"].get("network_isolation_key", "")
    ]
