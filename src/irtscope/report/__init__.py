"""Shared HTML, figure and table rendering used by both halves.

Everything that turns results into files a reader opens lives here, so the trials and imaging
reports look alike and escape untrusted text the same way.
"""

from irtscope.report._figures import FigureFiles, figure_data_uri, save_figure
from irtscope.report._html import render_html, render_template_string
from irtscope.report._safe import (
    FORMULA_TRIGGERS,
    markdown_cell,
    markdown_frame,
    safe_cell,
    safe_frame,
    write_csv,
)
from irtscope.report._tables import TableFiles, write_table

__all__ = [
    "FORMULA_TRIGGERS",
    "FigureFiles",
    "TableFiles",
    "figure_data_uri",
    "markdown_cell",
    "markdown_frame",
    "render_html",
    "render_template_string",
    "safe_cell",
    "safe_frame",
    "save_figure",
    "write_csv",
    "write_table",
]
