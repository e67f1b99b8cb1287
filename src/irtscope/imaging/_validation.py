"""Internal (cross-validated) versus external validation, with harmonisation on and off.

This reproduces the reference study's main message in one table: a model that looks good in
cross-validation on its development cohort may lose much of its discrimination on external
cohorts scanned elsewhere. For each task the development cohort is evaluated by patient-grouped
stratified k-fold CV with nested, patient-grouped hyper-parameter tuning; then the same
(tuned) pipeline is refitted on the whole development cohort and scored on each external cohort
untouched. Each configuration is run without and with ComBat harmonisation by ``batch_column``.

Tasks
-----
- ``pd``: per-lesion progressive disease, random forest on radiomics (unit: lesion, grouped
  by patient); AUC with patient-clustered bootstrap CI, calibration intercept/slope, and a
  DeLong test of harmonised versus unharmonised scores on the same lesions.
- ``os`` / ``pfs``: random survival forest at patient level, on radiomics and on radiomics plus
  clinical variables (PD-L1, arm); Harrell's C-index with bootstrap CI, Uno's C-index and mean
  time-dependent AUC. Survival is a patient outcome, so a patient's imaging features are those
  of their largest lesion (the usual "index lesion") plus two burden features computed from
  all their segmented lesions: the lesion count and the total lesion volume (tumour burden is
  the best-known imaging predictor of survival under immunotherapy).
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
from sklearn.utils import check_random_state

from irtscope._console import ProgressCallback
from irtscope._errors import DataError
from irtscope.imaging._evaluate import (
    auc_ci,
    c_index_ci,
    calibration_intercept_slope,
    delong_test,
    grouped_cv_predict,
    time_dependent_auc,
    uno_c_index,
)
from irtscope.imaging._models import (
    make_radiomics_classifier,
    make_survival_forest,
    make_tuned,
    radiomics_columns,
)

__all__ = [
    "BURDEN_COLUMNS",
    "ValidationResult",
    "internal_external_table",
    "merge_features",
    "patient_level",
]

_TASKS = {"pd": "per-lesion PD", "os": "overall survival", "pfs": "progression-free survival"}
_VOLUME_COLUMNS = ("original_shape_MeshVolume", "original_shape_VoxelVolume")
_LABEL_COLUMNS = ("pd", "os_time", "os_event", "pfs_time", "pfs_event")


@dataclass
class ValidationResult:
    """Metrics table plus the predictions behind it (for ROC, calibration and KM plots)."""

    table: pd.DataFrame
    predictions: pd.DataFrame
    simulated: bool
    settings: dict[str, Any] = field(default_factory=dict)


def merge_features(manifest: pd.DataFrame, features: pd.DataFrame) -> pd.DataFrame:
    """Join extracted features with the manifest's labels and clinical columns by lesion.

    Lesions without features (extraction failures) are dropped; the caller reports them from
    the extraction failures table. Identifier columns must agree between the two inputs.
    """
    for name, frame in (("manifest", manifest), ("features", features)):
        if "lesion_id" not in frame.columns:
            raise DataError(f"{name} has no lesion_id column")
    extra = [c for c in manifest.columns if c not in features.columns or c == "lesion_id"]
    merged = features.merge(manifest[extra], on="lesion_id", how="inner", validate="1:1")
    if merged.empty:
        raise DataError("no lesion_id is shared by the manifest and the features table")
    for column in ("patient_id", "cohort"):
        if column in manifest.columns and column in features.columns:
            check = features[["lesion_id", column]].merge(
                manifest[["lesion_id", column]], on="lesion_id", suffixes=("", "_m")
            )
            bad = check[check[column].astype(str) != check[f"{column}_m"].astype(str)]
            if not bad.empty:
                raise DataError(
                    f"features and manifest disagree on {column} for lesion "
                    f"{bad['lesion_id'].iloc[0]!r}"
                )
    return merged


#: Patient-level burden features added by :func:`patient_level`.
BURDEN_COLUMNS = ("burden_lesion_count", "burden_total_volume")


def patient_level(frame: pd.DataFrame) -> pd.DataFrame:
    """One row per patient: the largest lesion's row plus burden features.

    ``burden_lesion_count`` counts the patient's lesions with features; ``burden_total_volume``
    sums their volumes (pyradiomics mesh or voxel volume; NaN when neither was extracted).
    """
    volume = next((c for c in _VOLUME_COLUMNS if c in frame.columns), None)
    ordered = frame.sort_values(volume, ascending=False, kind="stable") if volume else frame
    out = ordered.drop_duplicates("patient_id", keep="first").copy()
    grouped = frame.groupby("patient_id")
    out["n_lesions_observed"] = out["patient_id"].map(grouped.size()).to_numpy()
    out["burden_lesion_count"] = out["n_lesions_observed"].astype(float)
    total = grouped[volume].sum() if volume else pd.Series(dtype=float)
    out["burden_total_volume"] = out["patient_id"].map(total).astype(float).to_numpy()
    return out.sort_values(["cohort", "patient_id"]).reset_index(drop=True)


def _survival_y(frame: pd.DataFrame, task: str) -> np.ndarray:
    from sksurv.util import Surv

    time = frame[f"{task}_time"].to_numpy(dtype=float)
    event = frame[f"{task}_event"].to_numpy().astype(bool)
    return Surv.from_arrays(event, time)


def _usable(frame: pd.DataFrame, task: str) -> pd.DataFrame:
    columns = ["pd"] if task == "pd" else [f"{task}_time", f"{task}_event"]
    if not set(columns) <= set(frame.columns):
        return frame.iloc[0:0]
    return frame.dropna(subset=columns)


def internal_external_table(
    frame: pd.DataFrame,
    development: str = "DEV-SIM",
    externals: Sequence[str] | None = None,
    tasks: Sequence[str] = ("pd", "os", "pfs"),
    clinical: Sequence[str] = ("pdl1", "arm"),
    harmonize: Sequence[bool] = (False, True),
    batch_column: str = "cohort",
    n_splits: int = 5,
    inner_splits: int = 3,
    tune: bool = True,
    n_estimators: int = 200,
    n_boot: int = 1000,
    random_state: int | None = 0,
    progress: ProgressCallback | None = None,
) -> ValidationResult:
    """Internal CV and external validation of every model, harmonisation off and on.

    Parameters
    ----------
    frame : DataFrame
        Lesion-level rows from :func:`merge_features`: ``patient_id``, ``cohort``, radiomics
        columns, labels (``pd``, ``os_time``/``os_event``, ``pfs_time``/``pfs_event``) and the
        ``clinical`` columns.
    development : str
        Cohort used for development (CV and final fit).
    externals : sequence of str, optional
        External cohorts; default all other cohorts.
    tasks : sequence of {"pd", "os", "pfs"}
    clinical : sequence of str
        Clinical predictors added to the "radiomics+clinical" survival models (those present).
    harmonize : sequence of bool
        Which harmonisation settings to run.
    n_splits, inner_splits : int
        Outer CV folds; inner (tuning) folds. ``tune=False`` skips the inner search.
    n_estimators : int
        Trees per forest.
    n_boot : int
        Bootstrap replicates for the confidence intervals.
    random_state : int or None
        Seeds folds, forests and bootstraps (resolved here; nothing global is seeded).

    Returns
    -------
    ValidationResult
    """
    unknown = set(tasks) - set(_TASKS)
    if unknown:
        raise DataError(f"unknown task(s) {sorted(unknown)}; choose from {sorted(_TASKS)}")
    for column in ("patient_id", "cohort", batch_column):
        if column not in frame.columns:
            raise DataError(f"feature frame has no {column!r} column")
    cohorts = list(pd.unique(frame["cohort"]))
    if development not in cohorts:
        raise DataError(f"development cohort {development!r} not found; cohorts: {cohorts}")
    externals = [c for c in cohorts if c != development] if externals is None else list(externals)
    radiomics = radiomics_columns(frame)
    if not radiomics:
        raise DataError("no radiomics feature columns (original_*, wavelet-*, ...) in frame")
    clinical = [c for c in clinical if c in frame.columns]
    simulated = bool("simulated" in frame.columns and frame["simulated"].eq(True).any())
    rng = check_random_state(random_state)
    seed = int(rng.randint(0, 2**31 - 1))

    jobs = []
    for task in tasks:
        variants = [("radiomics", [])]
        if task != "pd" and clinical:
            variants.append(("radiomics+clinical", clinical))
        for name, clin in variants:
            for harm in harmonize:
                jobs.append((task, name, clin, harm))
    if progress:
        progress(0, len(jobs), "validating models")

    rows: list[dict[str, Any]] = []
    predictions: list[pd.DataFrame] = []
    patients = patient_level(frame)
    for task, model_name, clin, harm in jobs:
        data = _usable(frame if task == "pd" else patients, task)
        dev = data[data["cohort"] == development].reset_index(drop=True)
        if dev.empty:
            if progress:
                progress(1, None, "")
            continue
        features = radiomics if task == "pd" else [*radiomics, *BURDEN_COLUMNS]
        estimator = _estimator(task, features, clin, harm, batch_column, n_estimators, seed)
        skip = _tuning_problem(task, dev, n_splits, inner_splits) if tune else None
        job_tune = tune and skip is None
        if job_tune:
            estimator = make_tuned(estimator, inner_splits=inner_splits, random_state=seed)
        base = {
            "task": _TASKS[task],
            "unit": "lesion" if task == "pd" else "patient",
            "model": model_name,
            "harmonisation": "ComBat" if harm else "off",
            "tuning": "nested" if job_tune else (f"skipped: {skip}" if tune else "off"),
            "simulated": simulated,
        }
        method = "predict_proba" if task == "pd" else "predict"
        y_dev = dev["pd"].to_numpy(int) if task == "pd" else _survival_y(dev, task)
        try:
            oof = grouped_cv_predict(
                estimator, dev, y_dev, dev["patient_id"], n_splits=n_splits,
                random_state=seed, method=method,
            )
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", UserWarning)  # unseen one-hot categories
                final = estimator.fit(
                    dev, y_dev, **({"groups": dev["patient_id"]} if job_tune else {})
                )
        except ValueError as exc:
            # scikit-learn/sksurv raise bare ValueErrors deep inside (nested) CV when a fold
            # is too small to score (e.g. "Need a minimum of two samples"); say which model
            # and cohort, and what to change, instead of a traceback.
            raise DataError(
                f"{_TASKS[task]}, {model_name}, harmonisation {base['harmonisation']}: could "
                f"not fit on development cohort {development!r} "
                f"({dev['patient_id'].nunique()} patients, {n_splits} outer"
                f"{f' x {inner_splits} inner' if job_tune else ''} folds): {exc}; use fewer "
                f"folds{' or turn nested tuning off (--no-tune)' if job_tune else ''}, or more "
                "patients"
            ) from exc
        cutoff = float(np.median(oof))
        scored = [(f"internal {n_splits}-fold CV", development, dev, oof)]
        for cohort in externals:
            ext = data[data["cohort"] == cohort].reset_index(drop=True)
            if ext.empty:
                continue
            score = np.asarray(getattr(final, method)(ext))
            scored.append(("external", cohort, ext, score[:, 1] if score.ndim == 2 else score))
        for setting, cohort, part, score in scored:
            row = dict(base, setting=setting, cohort=cohort)
            row.update(_metrics(task, part, score, dev, n_boot, seed))
            rows.append(row)
            predictions.append(_prediction_frame(task, base, setting, cohort, part, score, cutoff))
        if progress:
            label = f"{_TASKS[task]}: {model_name}, harmonisation {base['harmonisation']}"
            progress(1, None, label)

    table = pd.DataFrame(rows)
    preds = pd.concat(predictions, ignore_index=True) if predictions else pd.DataFrame()
    if not table.empty:
        table = _add_delong(table, preds)
    settings = {
        "development": development,
        "externals": externals,
        "tasks": list(tasks),
        "clinical": clinical,
        "batch_column": batch_column,
        "n_splits": n_splits,
        "inner_splits": inner_splits,
        "tune": tune,
        "n_estimators": n_estimators,
        "n_boot": n_boot,
        "random_state": random_state,
        "n_radiomics_features": len(radiomics),
    }
    return ValidationResult(table=table, predictions=preds, simulated=simulated, settings=settings)


def _tuning_problem(task: str, dev: pd.DataFrame, n_splits: int, inner_splits: int) -> str | None:
    """Why nested tuning cannot work on this development cohort, or None when it can.

    Inner folds are carved out of an outer training set (about ``(k - 1) / k`` of the
    patients). Every inner test fold needs both classes (AUC) or at least two patients with an
    event among a few patients (C-index); otherwise scikit-learn scores candidates as NaN (or
    sksurv raises), and the "tuned" choice is arbitrary. The rule is the one the deep report
    uses for its radiomics forest: at least ``2 x inner_splits`` training patients per class
    (PD / no PD) or with an event.
    """
    share = (n_splits - 1) / n_splits
    need = 2 * inner_splits
    if task == "pd":
        per_patient = dev.groupby("patient_id")["pd"].max()
        counts = {"with PD": int(per_patient.sum()), "without PD": int((per_patient == 0).sum())}
    else:
        event = dev[f"{task}_event"].astype(bool)
        counts = {"with an event": int(event.sum()), "in total": int(dev["patient_id"].nunique())}
    for what, count in counts.items():
        if count * share < need:
            return (
                f"{count} development patients {what}; nested {inner_splits}-fold tuning needs "
                f"about {int(np.ceil(need / share))}"
            )
    return None


def _estimator(
    task: str,
    radiomics: list[str],
    clinical: list[str],
    harmonize: bool,
    batch_column: str,
    n_estimators: int,
    seed: int,
) -> Any:
    if task == "pd":
        return make_radiomics_classifier(
            radiomics, clinical, harmonize=harmonize, batch_column=batch_column,
            n_estimators=n_estimators, random_state=seed,
        )
    return make_survival_forest(
        radiomics, clinical, harmonize=harmonize, batch_column=batch_column,
        n_estimators=n_estimators, random_state=seed,
    )


def _nan_metrics() -> dict[str, float]:
    return dict.fromkeys(("estimate", "ci_lower", "ci_upper"), float("nan"))


def _metrics(
    task: str, part: pd.DataFrame, score: np.ndarray, dev: pd.DataFrame, n_boot: int, seed: int
) -> dict[str, Any]:
    """Discrimination with CI and the secondary metrics; NaN plus a note when undefined."""
    out: dict[str, Any] = {
        "n_patients": int(part["patient_id"].nunique()),
        "n_lesions": len(part) if task == "pd" else int(part["n_lesions_observed"].sum()),
        "note": "",
    }
    if task == "pd":
        y = part["pd"].to_numpy(int)
        out.update(metric="AUC", n_events=int(y.sum()))
        try:
            out.update(zip(("estimate", "ci_lower", "ci_upper"),
                           auc_ci(y, score, part["patient_id"], n_boot, seed), strict=True))
            out["cal_intercept"], out["cal_slope"] = calibration_intercept_slope(y, score)
        except DataError as exc:
            out.update(_nan_metrics(), note=str(exc))
        return out
    event = part[f"{task}_event"].to_numpy().astype(bool)
    time = part[f"{task}_time"].to_numpy(float)
    out.update(metric="C-index (Harrell)", n_events=int(event.sum()))
    try:
        out.update(zip(("estimate", "ci_lower", "ci_upper"),
                       c_index_ci(event, time, score, part["patient_id"], n_boot, seed),
                       strict=True))
    except DataError as exc:
        out.update(_nan_metrics(), note=str(exc))
        return out
    y_train, y_test = _survival_y(dev, task), _survival_y(part, task)
    try:
        out["uno_c"] = uno_c_index(y_train, y_test, score)
    except (DataError, ValueError) as exc:
        out["uno_c"], out["note"] = float("nan"), f"Uno C: {exc}"
    try:
        out["td_auc_mean"] = time_dependent_auc(y_train, y_test, score)[2]
    except (DataError, ValueError) as exc:
        out["td_auc_mean"] = float("nan")
        out["note"] = (out["note"] + "; " if out["note"] else "") + f"td-AUC: {exc}"
    return out


def _prediction_frame(
    task: str,
    base: dict[str, Any],
    setting: str,
    cohort: str,
    part: pd.DataFrame,
    score: np.ndarray,
    cutoff: float,
) -> pd.DataFrame:
    frame = pd.DataFrame(
        {
            "task": base["task"],
            "model": base["model"],
            "harmonisation": base["harmonisation"],
            "setting": setting,
            "cohort": cohort,
            "patient_id": part["patient_id"].to_numpy(),
            "lesion_id": part["lesion_id"].to_numpy() if "lesion_id" in part else None,
            "score": score,
            "risk_cutoff": cutoff,
        }
    )
    if task == "pd":
        frame["y"] = part["pd"].to_numpy(int)
    else:
        frame["time"] = part[f"{task}_time"].to_numpy(float)
        frame["event"] = part[f"{task}_event"].to_numpy().astype(bool)
    return frame


def _add_delong(table: pd.DataFrame, preds: pd.DataFrame) -> pd.DataFrame:
    """DeLong p value of ComBat versus no harmonisation, same model and same lesions."""
    table = table.copy()
    table["delong_p_vs_off"] = np.nan
    keys = ["task", "model", "setting", "cohort"]
    pd_preds = preds[preds["task"] == _TASKS["pd"]]
    for index, row in table[(table["metric"] == "AUC") & (table["harmonisation"] == "ComBat")]\
            .iterrows():
        select = np.logical_and.reduce([pd_preds[k] == row[k] for k in keys])
        on = pd_preds[select & (pd_preds["harmonisation"] == "ComBat")]
        off = pd_preds[select & (pd_preds["harmonisation"] == "off")]
        if len(on) != len(off) or on.empty or on["y"].nunique() < 2:
            continue
        off = off.set_index("lesion_id").loc[on["lesion_id"]]
        table.loc[index, "delong_p_vs_off"] = delong_test(
            on["y"].to_numpy(), on["score"].to_numpy(), off["score"].to_numpy()
        )[1]
    return table
