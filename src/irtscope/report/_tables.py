"""Tables: every publication table is written as CSV, XLSX and Markdown.

Cells come from registry records and user manifests, so they are untrusted: CSV and XLSX get
formula-like text quoted and Markdown gets HTML and pipes escaped (:mod:`irtscope.report._safe`)
before anything is written; numbers are written as numbers.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from irtscope.report._safe import markdown_frame, safe_frame, write_csv


@dataclass(frozen=True)
class TableFiles:
    csv: Path
    xlsx: Path
    markdown: Path


def write_table(table: pd.DataFrame, out_dir: Path, name: str, index: bool = False) -> TableFiles:
    """Write ``table`` as ``name.csv``, ``name.xlsx`` and ``name.md`` under ``out_dir``."""
    out_dir.mkdir(parents=True, exist_ok=True)
    files = TableFiles(
        csv=out_dir / f"{name}.csv",
        xlsx=out_dir / f"{name}.xlsx",
        markdown=out_dir / f"{name}.md",
    )
    write_csv(table, files.csv, index=index)
    # Excel sheet names are limited to 31 characters.
    safe_frame(table, xlsx=True).to_excel(files.xlsx, index=index, sheet_name=name[:31])
    files.markdown.write_text(
        markdown_frame(table).to_markdown(index=index) + "\n", encoding="utf-8"
    )
    return files
