"""Loader for the NSCLC-Radiomics (Lung1) clinical table.

The table (422 patients) is the only real outcome data we can use: it lets the survival
pipeline and its metrics be checked on real censoring patterns before they meet the
simulated immunotherapy cohorts.

Coding decisions, all explicit rather than silent:

- ``clinical.T.Stage`` 1-4 are T1-T4; the value 5 is outside the TNM range (Tx in the source
  data) and becomes missing. ``Clinical.N.Stage`` 0-3 are N0-N3; 4 (Nx) becomes missing.
  ``Clinical.M.Stage`` 0-1 are M0-M1; 3 (Mx) becomes missing.
- ``Overall.Stage`` I, II, IIIa, IIIb is kept as an ordinal 1-4 (``overall_stage``).
- ``Histology`` empty becomes the explicit category ``"not reported"``, so the model can learn
  from missingness instead of the row being dropped.
- ``age`` empty stays missing (NaN); the model pipeline imputes it from training folds only.
- Survival time is in days; ``os_time`` is converted to months (days / 30.4375) to match the
  manifest contract, and ``os_days`` keeps the original.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from irtscope._errors import DataError

__all__ = ["LUNG1_CLINICAL_FEATURES", "load_lung1_clinical"]

_COLUMNS = {
    "PatientID": "patient_id",
    "age": "age",
    "clinical.T.Stage": "t_stage",
    "Clinical.N.Stage": "n_stage",
    "Clinical.M.Stage": "m_stage",
    "Overall.Stage": "overall_stage",
    "Histology": "histology",
    "gender": "sex",
    "Survival.time": "os_days",
    "deadstatus.event": "os_event",
}
_VALID = {"t_stage": {1, 2, 3, 4}, "n_stage": {0, 1, 2, 3}, "m_stage": {0, 1}}
_STAGE_ORDER = {"I": 1, "II": 2, "IIIA": 3, "IIIB": 4}
DAYS_PER_MONTH = 30.4375

#: Clinical predictors used by the Lung1 overall-survival model.
LUNG1_CLINICAL_FEATURES = [
    "age",
    "t_stage",
    "n_stage",
    "m_stage",
    "overall_stage",
    "histology",
    "sex",
]


def load_lung1_clinical(path: str | Path) -> pd.DataFrame:
    """Read and code the Lung1 clinical CSV.

    Parameters
    ----------
    path : str or Path
        ``lung1_clinical_422.csv``.

    Returns
    -------
    DataFrame
        One row per patient: ``patient_id``, ``age`` (float, NaN when missing), ``t_stage``,
        ``n_stage``, ``m_stage``, ``overall_stage`` (float ordinals, NaN for unknown),
        ``histology`` and ``sex`` (str), ``os_days``, ``os_time`` (months), ``os_event``
        (bool). ``DataFrame.attrs["missing"]`` counts the values coded missing per column.

    Raises
    ------
    DataError
        The file is missing, lacks a column, or has an invalid survival time/event.
    """
    path = Path(path)
    if not path.is_file():
        raise DataError(f"Lung1 clinical table not found: {path}")
    raw = pd.read_csv(path)
    missing_columns = sorted(set(_COLUMNS) - set(raw.columns))
    if missing_columns:
        raise DataError(f"{path}: missing column(s) {missing_columns}")
    data = raw[list(_COLUMNS)].rename(columns=_COLUMNS)
    out = pd.DataFrame({"patient_id": data["patient_id"].astype(str)})
    out["age"] = pd.to_numeric(data["age"], errors="coerce").astype(float)
    for column, valid in _VALID.items():
        values = pd.to_numeric(data[column], errors="coerce")
        out[column] = values.where(values.isin(valid)).astype(float)
    stage = data["overall_stage"].astype("string").str.strip().str.upper()
    out["overall_stage"] = stage.map(_STAGE_ORDER).astype(float)
    histology = data["histology"].astype("string").str.strip().str.lower()
    out["histology"] = histology.fillna("not reported").astype(str)
    out["sex"] = data["sex"].astype("string").str.strip().str.lower().fillna("not reported")
    out["sex"] = out["sex"].astype(str)
    days = pd.to_numeric(data["os_days"], errors="coerce")
    event = pd.to_numeric(data["os_event"], errors="coerce")
    bad = days.isna() | (days < 0) | ~event.isin([0, 1])
    if bad.any():
        first = out.loc[bad, "patient_id"].iloc[0]
        raise DataError(
            f"{path}: {int(bad.sum())} row(s) with invalid survival time/event "
            f"(first: {first}); times must be >= 0 days and events 0/1"
        )
    out["os_days"] = days.astype(float)
    out["os_time"] = days.astype(float) / DAYS_PER_MONTH
    out["os_event"] = event.astype(int).astype(bool)
    if out["patient_id"].duplicated().any():
        raise DataError(f"{path}: duplicated PatientID values")
    out.attrs["missing"] = {
        column: int(out[column].isna().sum())
        for column in ("age", "t_stage", "n_stage", "m_stage", "overall_stage")
    } | {"histology": int((out["histology"] == "not reported").sum())}
    out.attrs["source"] = str(path)
    return out


def lung1_survival_target(frame: pd.DataFrame) -> np.ndarray:
    """sksurv structured array (``event``, ``time`` in months) for a loaded Lung1 frame."""
    from sksurv.util import Surv

    return Surv.from_arrays(frame["os_event"].to_numpy(), frame["os_time"].to_numpy())
