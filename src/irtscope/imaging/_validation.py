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
    "FeatureMatch",
    "ValidationResult",
    "internal_external_table",
    "match_features",
    "merge_features",
    "patient_level",
]

_TASKS = {"pd": "per-lesion PD", "os": "overall survival", "pfs": "progression-free survival"}
_VOLUME_COLUMNS = ("original_shape_MeshVolume", "original_shape_VoxelVolume")
_LABEL_COLUMNS = ("pd", "os_time", "os_event", "pfs_time", "pfs_event")


#: Columns of :attr:`ValidationResult.excluded` and :attr:`FeatureMatch.unmatched`.
EXCLUDED_COLUMNS = ("problem", "column", "lesion_id", "cohort", "reason")
UNMATCHED_COLUMNS = ("lesion_id", "patient_id", "cohort", "problem")


@dataclass
class ValidationResult:
    """Metrics table plus the predictions behind it (for ROC, calibration and KM plots).

    ``excluded`` lists what the models did not use, one row per item (columns
    :data:`EXCLUDED_COLUMNS`): ``problem`` is ``"column dropped"`` (all values missing or
    constant in the development cohort; ``column`` and ``reason`` say which and why) or
    ``"infinite value"`` (``lesion_id`` and ``column`` of an inf/-inf value, treated as
    missing). Empty when every feature was usable.
    """

    table: pd.DataFrame
    predictions: pd.DataFrame
    simulated: bool
    settings: dict[str, Any] = field(default_factory=dict)
    excluded: pd.DataFrame = field(default_factory=lambda: pd.DataFrame(columns=EXCLUDED_COLUMNS))


@dataclass
class FeatureMatch:
    """Manifest x features join, with what did not match on either side.

    ``unmatched`` has one row per lesion (columns :data:`UNMATCHED_COLUMNS`): ``problem`` is
    ``"no features"`` (a manifest lesion the features table lacks: extraction failed or was
    not run) or ``"not in manifest"`` (a feature row whose lesion the manifest does not list).
    """

    frame: pd.DataFrame
    unmatched: pd.DataFrame


def _first_duplicate(ids: pd.Series, name: str) -> None:
    repeated = ids[ids.duplicated(keep=False)]
    if repeated.empty:
        return
    first = repeated.iloc[0]
    count = int((repeated == first).sum())
    others = repeated.nunique() - 1
    more = f" (and {others} more repeated lesion ids)" if others else ""
    raise DataError(
        f"{name} has {count} rows for lesion {first!r}{more}; keep one row per lesion_id "
        f"(e.g. features.parquet of one extraction run, not several concatenated)"
    )


def _ids(frame: pd.DataFrame, name: str) -> pd.Series:
    """``lesion_id`` as text: a CSV manifest reads ids as text, a parquet file may hold ints."""
    if "lesion_id" not in frame.columns:
        raise DataError(f"{name} has no lesion_id column")
    ids = frame["lesion_id"]
    missing = ids.isna()
    if missing.any():
        raise DataError(
            f"{name} row {int(np.flatnonzero(missing.to_numpy())[0])} has no lesion_id"
        )
    return ids.astype(str)


def match_features(manifest: pd.DataFrame, features: pd.DataFrame) -> FeatureMatch:
    """Join extracted features with the manifest's labels and clinical columns by lesion.

    Lesion ids are compared as text. Lesions on one side only are returned in
    :attr:`FeatureMatch.unmatched` for the caller to report (they are never silently lost).

    Raises
    ------
    DataError
        A repeated lesion id (on either side, naming it), no shared lesion at all, features
        and manifest disagreeing on a lesion's patient or cohort, or a manifest cohort none of
        whose lesions has features (a whole cohort would otherwise vanish from the results).
    """
    manifest_ids, feature_ids = _ids(manifest, "manifest"), _ids(features, "features table")
    _first_duplicate(manifest_ids, "manifest")
    _first_duplicate(feature_ids, "features table")
    manifest = manifest.assign(lesion_id=manifest_ids)
    features = features.assign(lesion_id=feature_ids)
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
    unmatched = _unmatched(manifest, features, set(merged["lesion_id"]))
    if "cohort" in manifest.columns:
        counts = manifest["cohort"].astype(str).value_counts(sort=False)
        kept = manifest.loc[manifest["lesion_id"].isin(merged["lesion_id"]), "cohort"]
        for cohort, n in counts.items():
            if cohort not in set(kept.astype(str)):
                raise DataError(
                    f"cohort {cohort!r}: none of its {n} manifest lesions has features (no "
                    "features, extraction failed for all, or features of another manifest); "
                    "extract them, or leave the cohort out of the manifest"
                )
    return FeatureMatch(frame=merged, unmatched=unmatched)


def _unmatched(manifest: pd.DataFrame, features: pd.DataFrame, matched: set[str]) -> pd.DataFrame:
    parts = []
    for frame, problem in ((manifest, "no features"), (features, "not in manifest")):
        rows = frame[~frame["lesion_id"].isin(matched)]
        part = pd.DataFrame({"lesion_id": rows["lesion_id"].to_numpy()})
        for column in ("patient_id", "cohort"):
            part[column] = rows[column].to_numpy() if column in rows else None
        part["problem"] = problem
        parts.append(part)
    return pd.concat(parts, ignore_index=True).reindex(columns=list(UNMATCHED_COLUMNS))


def merge_features(manifest: pd.DataFrame, features: pd.DataFrame) -> pd.DataFrame:
    """:func:`match_features` without the unmatched lesions (``.frame`` only).

    Prefer :func:`match_features` where the lesions found on one side only can be reported.
    """
    return match_features(manifest, features).frame


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
        With :attr:`~ValidationResult.excluded`: radiomics columns that are all missing or
        constant in the development cohort are dropped (nothing can be learnt from them, and
        an all-missing column breaks imputation and ComBat); infinite values (a degenerate
        feature computation) are treated as missing, and each is listed with its lesion and
        column.

    Raises
    ------
    DataError
        Unknown task or cohort, no radiomics column left, a cohort whose radiomics values are
        all missing, a development cohort with one class (PD) or no event (survival), naming
        the cohort; or a model that cannot be fitted, naming task, model and cohort.
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
    frame, radiomics, excluded = _screen_features(frame, radiomics, development, externals)
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
    skipped: list[str] = []
    patients = patient_level(frame)
    for task, model_name, clin, harm in jobs:
        source = frame if task == "pd" else patients
        data = _usable(source, task)
        dev = data[data["cohort"] == development].reset_index(drop=True)
        if dev.empty:
            skipped.append(f"{_TASKS[task]}: no development lesions with {task} labels")
            if progress:
                progress(1, None, "")
            continue
        _check_outcome(task, dev, development)
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
                if (source["cohort"] == cohort).any():  # the cohort is there, its labels not
                    rows.append(_unlabelled_row(base, task, cohort))
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
    dropped = excluded[excluded["problem"] == "column dropped"]
    if not dropped.empty:
        settings["feature columns dropped"] = "; ".join(
            f"{c} ({r})" for c, r in zip(dropped["column"], dropped["reason"], strict=True)
        )
    infinite = excluded[excluded["problem"] == "infinite value"]
    if not infinite.empty:
        shown = ", ".join(
            f"{lesion!r} {column}"
            for lesion, column in zip(infinite["lesion_id"][:5], infinite["column"][:5],
                                      strict=True)
        )
        more = f" and {len(infinite) - 5} more" if len(infinite) > 5 else ""
        settings["infinite values (treated as missing)"] = f"{shown}{more}"
    if skipped:
        settings["skipped"] = "; ".join(dict.fromkeys(skipped))
    return ValidationResult(table=table, predictions=preds, simulated=simulated,
                            settings=settings, excluded=excluded)


def _screen_features(
    frame: pd.DataFrame, radiomics: list[str], development: str, externals: Sequence[str]
) -> tuple[pd.DataFrame, list[str], pd.DataFrame]:
    """Drop unusable radiomics columns and turn infinite values into missing ones.

    Why here, before any model: an all-missing column makes the imputer drop it silently in
    some folds (so fold shapes differ) and ComBat fail; a column constant in the development
    cohort carries no information; an infinite value makes scikit-learn refuse the whole
    matrix, which used to surface as a misleading "use fewer folds" error. Returns the cleaned
    frame, the kept columns and the :attr:`ValidationResult.excluded` table.
    """
    values = frame[radiomics].astype(float)
    records: list[dict[str, Any]] = []
    infinite = np.isinf(values.to_numpy())
    if infinite.any():
        for i, j in zip(*np.nonzero(infinite), strict=True):
            records.append({
                "problem": "infinite value", "column": radiomics[j],
                "lesion_id": frame["lesion_id"].iloc[i] if "lesion_id" in frame else None,
                "cohort": frame["cohort"].iloc[i], "reason": "treated as missing",
            })
        values = values.mask(np.isinf(values))
    dev = values[(frame["cohort"] == development).to_numpy()]
    kept = []
    for column in radiomics:
        observed = dev[column].dropna()
        if observed.empty:
            everywhere = values[column].isna().all()
            reason = ("all values missing" if everywhere else
                      f"all values missing in development cohort {development!r}")
        elif observed.nunique() == 1:
            reason = f"constant in development cohort {development!r} ({observed.iloc[0]:.6g})"
        else:
            kept.append(column)
            continue
        records.append({"problem": "column dropped", "column": column, "lesion_id": None,
                        "cohort": development, "reason": reason})
    if not kept:
        raise DataError(
            f"no usable radiomics column: all {len(radiomics)} are missing or constant in "
            f"development cohort {development!r} (check the extraction's failures.csv)"
        )
    out = frame.drop(columns=[c for c in radiomics if c not in kept])
    out[kept] = values[kept].to_numpy()
    for cohort in [development, *externals]:
        rows = (out["cohort"] == cohort).to_numpy()
        if rows.any() and out.loc[rows, kept].isna().all(axis=None):
            raise DataError(
                f"cohort {cohort!r}: every radiomics value is missing for its {int(rows.sum())} "
                f"lesions ({len(kept)} feature columns); re-extract its features (see "
                "failures.csv) or leave the cohort out of the manifest"
            )
    excluded = pd.DataFrame(records, columns=list(EXCLUDED_COLUMNS))
    return out, kept, excluded


def _check_outcome(task: str, dev: pd.DataFrame, development: str) -> None:
    """A model needs both classes (PD) or at least one event (survival) to learn anything."""
    if task == "pd":
        classes = sorted(pd.unique(dev["pd"]).tolist())
        if len(classes) < 2:
            raise DataError(
                f"{_TASKS[task]}: development cohort {development!r} has one class only (pd = "
                f"{classes[0]} for all {len(dev)} lesions); the classifier needs lesions with "
                "and without progressive disease (or leave pd out of --tasks)"
            )
        return
    events = int(dev[f"{task}_event"].astype(bool).sum())
    if events == 0:
        raise DataError(
            f"{_TASKS[task]}: development cohort {development!r} has no event "
            f"({task}_event = 0 for all {len(dev)} patients); a survival model needs events "
            f"(or leave {task} out of --tasks)"
        )


def _unlabelled_row(base: dict[str, Any], task: str, cohort: str) -> dict[str, Any]:
    """A table row for an external cohort present in the data without labels for ``task``."""
    labels = "pd" if task == "pd" else f"{task}_time/{task}_event"
    return dict(
        base, setting="external", cohort=cohort, n_patients=0, n_lesions=0, n_events=0,
        metric="AUC" if task == "pd" else "C-index (Harrell)", **_nan_metrics(),
        note=f"no {labels} labels in this cohort: not evaluated",
    )


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
