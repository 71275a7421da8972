"""Jinja2 rendering of the packaged templates (`deepfake/reporting/templates/`): report.html and MODEL_CARD.md."""

from __future__ import annotations

from typing import Any

from deepfake.reporting.facts import count, num


def render(template: str, values: dict[str, Any]) -> str:
    """Render a packaged template; HTML templates are autoescaped (set names and paths are untrusted text)."""
    from jinja2 import Environment, PackageLoader, StrictUndefined

    env = Environment(
        loader=PackageLoader("deepfake.reporting", "templates"),
        autoescape=template.endswith(".html.j2"),
        undefined=StrictUndefined,  # a template bug fails the tests; missing facts arrive as "not run"
        keep_trailing_newline=True,
    )
    env.filters.update(num=num, count=count)
    return env.get_template(template).render(**values)
