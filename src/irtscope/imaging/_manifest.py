"""Lesion manifest: the table that tells every imaging stage where each lesion lives.

One row per lesion (see ``docs/contracts.md``). The manifest is validated once, on load, so
that later stages (feature extraction, models) can trust its types and paths and never have to
guess what a blank cell or a relative path means. Every problem is reported as a
:class:`~irtscope.DataError` naming the row (numbered from 1, header excluded), the
``lesion_id`` and the column, because a manifest of hundreds of lesions is otherwise hard to
fix.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pandas as pd

from irtscope._errors import DataError

__all__ = [
    "CLINICAL_COLUMNS",
    "OPTIONAL_COLUMNS",
    "REQUIRED_COLUMNS",
    "load_manifest",
    "validate_manifest",
]

#: Columns every manifest must have (non-empty in every row).
REQUIRED_COLUMNS: tuple[str, ...] = (
    "patient_id",
    "lesion_id",
    "cohort",
    "image_path",
    "mask_path",
)

#: Patient-level clinical columns: one value per patient, repeated on each of its lesions.
CLINICAL_COLUMNS: tuple[str, ...] = (
    "os_time",
    "os_event",
    "pfs_time",
    "pfs_event",
    "pdl1",
    "arm",
    "age",
    "sex",
)

#: Optional columns with a known meaning (type-checked when present). Other extra columns are
#: kept unchanged, so a study can carry its own covariates.
OPTIONAL_COLUMNS: tuple[str, ...] = (
    "mask_label", "mask_label_given", "roi_name", "pd", *CLINICAL_COLUMNS, "simulated"
)

# Strings that mean "no value" in a CSV cell (what pandas, R and spreadsheets write).
_MISSING = frozenset({"", "na", "nan", "n/a", "none", "null", "<na>"})
_TRUE = frozenset({"true", "t", "yes", "y", "1"})
_FALSE = frozenset({"false", "f", "no", "n", "0"})


def load_manifest(path: str | Path, *, check_files: bool = True) -> pd.DataFrame:
    """Read a lesion manifest (CSV or Parquet), validate it and resolve its paths.

    Parameters
    ----------
    path : str or Path
        ``.csv`` (optionally ``.csv.gz``) or ``.parquet`` file. Relative ``image_path`` and
        ``mask_path`` values are resolved against the folder holding this file, so a manifest
        and its images can be moved together.
    check_files : bool, default True
        Check that every image and mask path exists. Turn off only to inspect a manifest whose
        images are not on this machine.

    Returns
    -------
    pandas.DataFrame
        A validated copy; see :func:`validate_manifest` for the column types.

    Raises
    ------
    DataError
        The file is missing or unreadable, or a row is invalid (the message names the row,
        ``lesion_id`` and column).
    """
    path = Path(path)
    if not path.is_file():
        raise DataError(f"manifest {str(path)!r} not found; pass the path of a CSV or Parquet file")
    name = path.name.lower()
    try:
        if name.endswith((".parquet", ".pq")):
            df = pd.read_parquet(path)
        elif name.endswith((".csv", ".csv.gz", ".tsv", ".txt")):
            # Read every cell as text: we convert column by column so a bad cell is reported
            # with its row, instead of pandas silently turning a column into ``object``.
            sep = "\t" if name.endswith(".tsv") else ","
            df = pd.read_csv(path, sep=sep, dtype=str, keep_default_na=False)
        else:
            raise DataError(f"manifest {str(path)!r}: unknown format; use a .csv or .parquet file")
    except DataError:
        raise
    except Exception as exc:  # pandas/pyarrow raise many types for unreadable files
        raise DataError(f"manifest {str(path)!r} could not be read: {exc}") from exc
    return validate_manifest(df, path.resolve().parent, check_files=check_files)


def validate_manifest(
    df: pd.DataFrame, base_dir: str | Path, *, check_files: bool = True
) -> pd.DataFrame:
    """Check a manifest frame row by row and return a typed copy with absolute paths.

    Parameters
    ----------
    df : pandas.DataFrame
        One row per lesion with at least :data:`REQUIRED_COLUMNS`. The input is not modified.
    base_dir : str or Path
        Folder that relative ``image_path``/``mask_path`` values are relative to (the
        manifest's folder).
    check_files : bool, default True
        Check that every image and mask path exists.

    Returns
    -------
    pandas.DataFrame
        Columns in input order plus ``mask_label`` (int, default 1), ``mask_label_given``
        (bool: the manifest gave the label, so a mask that does not look like a label map is
        accepted), ``roi_name`` (str or None) and ``simulated`` (bool, default False) when
        absent. Id, cohort, path, ``arm``
        and ``sex`` columns are ``str`` (missing optional text is ``None``); ``image_path`` and
        ``mask_path`` are absolute; times, ``pdl1`` and ``age`` are float (NaN when missing);
        ``pd`` and the event columns are nullable ``Int64`` in {0, 1}.

    Raises
    ------
    DataError
        Missing required column, empty required cell, duplicate ``lesion_id``, value of the
        wrong type or out of range, missing file, or a patient whose clinical columns differ
        between its lesions. The message names the row (1-based, header excluded),
        ``lesion_id`` and column.
    """
    if not isinstance(df, pd.DataFrame):
        raise DataError(f"manifest must be a pandas DataFrame, got {type(df).__name__}")
    base = Path(base_dir)
    missing_cols = [c for c in REQUIRED_COLUMNS if c not in df.columns]
    if missing_cols:
        raise DataError(
            f"manifest is missing required column(s) {missing_cols}; "
            f"required: {list(REQUIRED_COLUMNS)}"
        )
    if len(df) == 0:
        raise DataError("manifest has no rows; add one row per lesion")

    out = df.reset_index(drop=True).copy()
    ids = [_text_or_none(v) for v in out["lesion_id"]]

    def where(i: int, column: str) -> str:
        lesion = f"lesion_id {ids[i]!r}" if ids[i] is not None else "lesion_id missing"
        return f"manifest row {i + 1} ({lesion}), column {column!r}"

    for column in REQUIRED_COLUMNS:
        values = []
        for i, v in enumerate(out[column]):
            text = _text_or_none(v)
            if text is None:
                raise DataError(f"{where(i, column)}: empty; every lesion needs a {column}")
            values.append(text)
        out[column] = pd.Series(values, dtype=object)

    seen: dict[str, int] = {}
    for i, lesion_id in enumerate(out["lesion_id"]):
        if lesion_id in seen:
            raise DataError(
                f"{where(i, 'lesion_id')}: duplicate lesion_id (also in row {seen[lesion_id] + 1});"
                " lesion ids must be unique"
            )
        seen[lesion_id] = i

    for column in ("image_path", "mask_path"):
        resolved = []
        for i, text in enumerate(out[column]):
            p = Path(text).expanduser()
            if not p.is_absolute():
                p = base / p
            p = Path(p).resolve()
            if check_files and not p.exists():
                raise DataError(f"{where(i, column)}: file not found: {str(p)!r}")
            resolved.append(str(p))
        out[column] = pd.Series(resolved, dtype=object)

    converters: dict[str, tuple[Callable[[Any], Any], str]] = {
        "mask_label": (_positive_int, "a positive integer label value"),
        "pd": (_binary, "0 or 1 (1 = progressive disease)"),
        "os_event": (_binary, "0 or 1 (1 = death)"),
        "pfs_event": (_binary, "0 or 1 (1 = progression or death)"),
        "os_time": (_non_negative, "a time in months >= 0"),
        "pfs_time": (_non_negative, "a time in months >= 0"),
        "pdl1": (_percent, "a PD-L1 tumour proportion score in percent, 0-100"),
        "age": (_age, "an age in years, 0-130"),
        "roi_name": (_text_or_none, "text"),
        "arm": (_text_or_none, "text"),
        "sex": (_text_or_none, "text"),
        "simulated": (_boolean, "true or false"),
        "mask_label_given": (_boolean, "true or false"),
    }
    for column, (convert, expected) in converters.items():
        if column not in out.columns:
            continue
        values = []
        for i, v in enumerate(out[column]):
            try:
                values.append(convert(v))
            except (TypeError, ValueError) as exc:
                raise DataError(
                    f"{where(i, column)}: bad value {v!r}; expected {expected}"
                ) from exc
        out[column] = _as_column(column, values)

    # Whether the label was written in the manifest: only then may a mask that does not look
    # like a label map (a CT, many values) be used (see irtscope.imaging._io). Kept from the
    # input when present, so a manifest saved after loading keeps its meaning.
    if "mask_label_given" in out.columns:
        out["mask_label_given"] = pd.Series(
            [False if _is_missing(v) else bool(v) for v in out["mask_label_given"]], dtype=bool
        )
    elif "mask_label" in out.columns:
        out["mask_label_given"] = out["mask_label"].notna().to_numpy()
    else:
        out["mask_label_given"] = False
    if "mask_label" not in out.columns:
        out["mask_label"] = pd.Series([1] * len(out), dtype="int64")
    else:
        out["mask_label"] = out["mask_label"].fillna(1).astype("int64")
    if "roi_name" not in out.columns:
        out["roi_name"] = pd.Series([None] * len(out), dtype=object)
    if "simulated" not in out.columns:
        out["simulated"] = False
    else:
        out["simulated"] = out["simulated"].fillna(False).astype(bool)

    _check_patient_level(out, where)
    return out


def _check_patient_level(out: pd.DataFrame, where: Callable[[int, str], str]) -> None:
    """Clinical columns describe the patient, so all of a patient's lesions must agree."""
    present = [c for c in CLINICAL_COLUMNS if c in out.columns]
    if not present:
        return
    first_row: dict[str, int] = {}
    for i, patient in enumerate(out["patient_id"]):
        j = first_row.setdefault(patient, i)
        if j == i:
            continue
        for column in present:
            a, b = out.at[j, column], out.at[i, column]
            if not _same(a, b):
                raise DataError(
                    f"{where(i, column)}: patient {patient!r} has {_show(b)} here but "
                    f"{_show(a)} in row {j + 1}; patient-level clinical values must be the same "
                    "on every lesion"
                )


def _show(value: Any) -> str:
    """A cell as a reader would write it: ``36.3``, not ``np.float64(36.3)``."""
    if _is_missing(value):
        return "an empty cell"
    if hasattr(value, "item"):  # numpy scalar
        value = value.item()
    return repr(value)


def _as_column(column: str, values: list[Any]) -> pd.Series:
    if column in ("pd", "os_event", "pfs_event"):
        return pd.Series(values, dtype="Int64")
    if column == "mask_label":
        return pd.Series(values, dtype="Int64")
    if column in ("os_time", "pfs_time", "pdl1", "age"):
        return pd.Series(values, dtype="float64")
    if column == "simulated":
        return pd.Series(values, dtype="boolean")
    return pd.Series(values, dtype=object)


def _same(a: Any, b: Any) -> bool:
    if _is_missing(a) and _is_missing(b):
        return True
    if _is_missing(a) or _is_missing(b):
        return False
    return bool(a == b)


def _is_missing(v: Any) -> bool:
    if v is None or v is pd.NA:
        return True
    if isinstance(v, float) and math.isnan(v):
        return True
    return isinstance(v, str) and v.strip().lower() in _MISSING


def _text_or_none(v: Any) -> str | None:
    if _is_missing(v):
        return None
    if isinstance(v, float) and v.is_integer():
        # Parquet/Excel may store numeric ids as floats; "12.0" would not match "12".
        return str(int(v))
    return str(v).strip()


def _number(v: Any) -> float | None:
    if _is_missing(v):
        return None
    if isinstance(v, bool):
        raise TypeError("booleans are not numbers here")
    x = float(v)  # ValueError for text such as "ten"
    if not math.isfinite(x):
        raise ValueError("not finite")
    return x


def _non_negative(v: Any) -> float | None:
    x = _number(v)
    if x is not None and x < 0:
        raise ValueError("negative")
    return x


def _percent(v: Any) -> float | None:
    x = _number(v)
    if x is not None and not 0 <= x <= 100:
        raise ValueError("out of range")
    return x


def _age(v: Any) -> float | None:
    x = _number(v)
    if x is not None and not 0 <= x <= 130:
        raise ValueError("out of range")
    return x


def _binary(v: Any) -> int | None:
    x = _number(v)
    if x is None:
        return None
    if x not in (0.0, 1.0):
        raise ValueError("not 0/1")
    return int(x)


def _positive_int(v: Any) -> int | None:
    x = _number(v)
    if x is None:
        return None
    if not x.is_integer() or x < 1:
        raise ValueError("not a positive integer")
    return int(x)


def _boolean(v: Any) -> bool | None:
    if _is_missing(v):
        return None
    if isinstance(v, bool):
        return v
    if isinstance(v, int | float) and v in (0, 1):
        return bool(v)
    text = str(v).strip().lower()
    if text in _TRUE:
        return True
    if text in _FALSE:
        return False
    raise ValueError("not a boolean")
