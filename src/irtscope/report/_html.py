"""Jinja2 rendering with autoescaping always on.

Registry text (titles, sponsor names, eligibility) is untrusted: it can contain ``<script>``.
Autoescaping is enforced for every template, including ones given as strings, so nothing a
registry record says is ever interpreted as markup by the reader's browser.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import jinja2

_TEMPLATE_DIR = Path(__file__).parent / "templates"


def _environment(extra_dirs: list[Path] | None = None) -> jinja2.Environment:
    dirs = [*(extra_dirs or []), _TEMPLATE_DIR]
    return jinja2.Environment(
        loader=jinja2.FileSystemLoader([str(d) for d in dirs]),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )


def render_html(
    template_name: str, context: dict[str, Any], template_dirs: list[Path] | None = None
) -> str:
    """Render a template from ``template_dirs`` (searched first) or the shared templates."""
    return _environment(template_dirs).get_template(template_name).render(**context)


def render_template_string(source: str, context: dict[str, Any]) -> str:
    """Render a template given as a string, with the same escaping rules."""
    return _environment().from_string(source).render(**context)
