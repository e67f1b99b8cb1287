"""Tables: every publication table is written as CSV, XLSX and Markdown."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pandas as pd


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
    table.to_csv(files.csv, index=index)
    # Excel sheet names are limited to 31 characters.
    table.to_excel(files.xlsx, index=index, sheet_name=name[:31])
    files.markdown.write_text(table.to_markdown(index=index) + "\n", encoding="utf-8")
    return files
