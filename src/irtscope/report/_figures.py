"""Figures: saved as PNG and SVG, and embeddable as data URIs in self-contained HTML."""

from __future__ import annotations

import base64
import io
from dataclasses import dataclass
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # headless: reports are rendered on servers and in CI

from matplotlib.figure import Figure


@dataclass(frozen=True)
class FigureFiles:
    """Where a figure was written, plus its PNG as a data URI for HTML embedding."""

    png: Path
    svg: Path
    data_uri: str


def figure_data_uri(fig: Figure, dpi: int = 120) -> str:
    """PNG bytes of ``fig`` as a ``data:image/png;base64,...`` URI (no external files)."""
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=dpi, bbox_inches="tight")
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def save_figure(fig: Figure, out_dir: Path, name: str, dpi: int = 150) -> FigureFiles:
    """Write ``name.png`` and ``name.svg`` under ``out_dir`` and return their paths."""
    out_dir.mkdir(parents=True, exist_ok=True)
    png = out_dir / f"{name}.png"
    svg = out_dir / f"{name}.svg"
    fig.savefig(png, dpi=dpi, bbox_inches="tight")
    fig.savefig(svg, bbox_inches="tight")
    return FigureFiles(png=png, svg=svg, data_uri=figure_data_uri(fig))
