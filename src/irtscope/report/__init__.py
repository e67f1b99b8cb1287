"""Shared HTML, figure and table rendering used by both halves.

Everything that turns results into files a reader opens lives here, so the trials and imaging
reports look alike and escape untrusted text the same way.
"""

from irtscope.report._figures import FigureFiles, figure_data_uri, save_figure
from irtscope.report._html import render_html, render_template_string
from irtscope.report._tables import TableFiles, write_table

__all__ = [
    "FigureFiles",
    "TableFiles",
    "figure_data_uri",
    "render_html",
    "render_template_string",
    "save_figure",
    "write_table",
]
