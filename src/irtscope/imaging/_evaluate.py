"""Evaluation metrics that respect lesions nested in patients.

Every resampling here (cross-validation folds, bootstrap replicates) draws *patients*, never
lesions: two lesions of one patient share the patient's biology and scanner, so splitting them
across train and test, or resampling them independently, makes the AUC look better and its
confidence interval narrower than they are.

Metrics are plain functions over explicit arrays (the scikit-survival habit); survival
targets are sksurv structured arrays (``sksurv.util.Surv.from_arrays``) where a training
distribution is needed (Uno's C-index, time-dependent AUC).
"""

from __future__ import annotations

import warnings
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
from scipy import stats
from sklearn.base import clone
from sklearn.metrics import roc_auc_score
from sklearn.model_selection import GridSearchCV, RandomizedSearchCV, StratifiedGroupKFold
from sklearn.utils import check_random_state

from irtscope._errors import DataError

__all__ = [
    "KaplanMeierGroups",
    "PatientStratifiedGroupKFold",
    "auc_ci",
    "c_index",
    "c_index_ci",
    "calibration_intercept_slope",
    "delong_test",
    "grouped_cv_predict",
    "grouped_splits",
    "km_by_risk_group",
    "time_dependent_auc",
    "uno_c_index",
]


# -- splitting -----------------------------------------------------------------------------
def _strata(y: Any) -> np.ndarray:
    """Stratification label: the class for classification, the event flag for survival."""
    y = np.asarray(y)
    if y.dtype.names is not None:
        event_field = next(
            (n for n in y.dtype.names if y[n].dtype == np.bool_), y.dtype.names[0]
        )
        return y[event_field].astype(int)
    return y


class PatientStratifiedGroupKFold(StratifiedGroupKFold):
    """``StratifiedGroupKFold`` that also understands sksurv survival targets.

    Groups are patients, so all lesions of a patient fall in the same fold. For a structured
    survival ``y`` the folds are stratified by the event indicator, so every fold has events to
    rank (a fold without deaths has no C-index). Usable as ``cv=`` in ``GridSearchCV`` (pass
    ``groups=`` to ``fit``) for nested tuning.
    """

    def split(self, X: Any, y: Any = None, groups: Any = None) -> Iterator[Any]:
        if groups is None:
            raise ValueError("PatientStratifiedGroupKFold needs groups= (patient ids)")
        strata = _strata(y) if y is not None else np.zeros(len(groups), dtype=int)
        with warnings.catch_warnings():
            # Few events per fold is expected in small cohorts; the split is still valid.
            warnings.filterwarnings("ignore", message="The least populated class")
            yield from super().split(X, strata, groups)


def grouped_splits(
    y: Any, groups: Any, n_splits: int = 5, random_state: Any = None
) -> list[tuple[np.ndarray, np.ndarray]]:
    """The patient-grouped, stratified (train, test) index pairs used by the evaluation.

    Exposed so tests and reports can check that no patient is on both sides of any split.
    """
    groups = np.asarray(groups)
    n_patients = np.unique(groups).size
    if n_patients < n_splits:
        raise DataError(
            f"{n_patients} patients cannot fill {n_splits} folds; lower n_splits"
        )
    cv = PatientStratifiedGroupKFold(n_splits=n_splits, shuffle=True, random_state=random_state)
    dummy = np.zeros((groups.size, 1))
    return list(cv.split(dummy, y, groups))


def _take(X: Any, index: np.ndarray) -> Any:
    return X.iloc[index] if isinstance(X, pd.DataFrame | pd.Series) else np.asarray(X)[index]


def grouped_cv_predict(
    estimator: Any,
    X: Any,
    y: Any,
    groups: Any,
    n_splits: int = 5,
    random_state: Any = None,
    method: str = "predict_proba",
) -> np.ndarray:
    """Out-of-fold predictions from patient-grouped, stratified k-fold cross-validation.

    A fresh clone of ``estimator`` is fitted on each training fold. When the estimator is a
    search (``GridSearchCV`` with a grouped ``cv``), it receives the training patients as
    ``groups`` so the inner tuning splits by patient as well (nested CV).

    Parameters
    ----------
    estimator : estimator
    X : DataFrame or array of shape (n_samples, n_features)
    y : array-like or sksurv structured array
    groups : array-like of shape (n_samples,)
        Patient id of every row.
    n_splits : int, default=5
    random_state : int, RandomState or None
        Controls the fold assignment (shuffled).
    method : str, default="predict_proba"
        ``"predict_proba"`` returns the positive-class probability (binary) or all columns;
        ``"predict"`` returns e.g. the survival forest's risk score (higher = worse).

    Returns
    -------
    ndarray
        One prediction per row of ``X``, each from the model that did not see its patient.
    """
    groups = np.asarray(groups)
    y_arr = np.asarray(y)
    predictions: np.ndarray | None = None
    for train, test in grouped_splits(y_arr, groups, n_splits, random_state):
        model = clone(estimator)
        fit_params = {}
        if isinstance(model, GridSearchCV | RandomizedSearchCV):
            fit_params["groups"] = groups[train]
        model.fit(_take(X, train), y_arr[train], **fit_params)
        out = np.asarray(getattr(model, method)(_take(X, test)))
        if method == "predict_proba" and out.ndim == 2 and out.shape[1] == 2:
            out = out[:, 1]
        if predictions is None:
            predictions = np.empty((groups.size, *out.shape[1:]), dtype=np.float64)
        predictions[test] = out
    assert predictions is not None
    return predictions


# -- bootstrap -----------------------------------------------------------------------------
def _cluster_bootstrap(
    groups: np.ndarray, n_boot: int, random_state: Any
) -> Iterator[np.ndarray]:
    """Row indices of ``n_boot`` bootstrap samples that resample whole patients."""
    rng = check_random_state(random_state)
    labels, inverse = np.unique(groups, return_inverse=True)
    members = [np.flatnonzero(inverse == k) for k in range(labels.size)]
    for _ in range(n_boot):
        chosen = rng.randint(0, labels.size, labels.size)
        yield np.concatenate([members[k] for k in chosen])


def _percentile_ci(values: Sequence[float], alpha: float) -> tuple[float, float]:
    values = np.asarray(values, dtype=float)
    values = values[np.isfinite(values)]
    if values.size == 0:
        return float("nan"), float("nan")
    lower, upper = np.percentile(values, [100 * alpha / 2, 100 * (1 - alpha / 2)])
    return float(lower), float(upper)


# -- discrimination for binary outcomes ---------------------------------------------------
def auc_ci(
    y_true: Any,
    y_score: Any,
    groups: Any,
    n_boot: int = 1000,
    random_state: Any = None,
    alpha: float = 0.05,
) -> tuple[float, float, float]:
    """ROC AUC with a patient-clustered percentile bootstrap confidence interval.

    Returns
    -------
    (auc, lower, upper)
        Replicates with a single class (no AUC defined) are skipped.
    """
    y_true = np.asarray(y_true).astype(int)
    y_score = np.asarray(y_score, dtype=float)
    groups = np.asarray(groups)
    if np.unique(y_true).size < 2:
        raise DataError("AUC needs both classes; y_true has only one")
    auc = float(roc_auc_score(y_true, y_score))
    replicates = []
    for rows in _cluster_bootstrap(groups, n_boot, random_state):
        value = _rank_auc(y_true[rows], y_score[rows])
        if np.isfinite(value):
            replicates.append(value)
    return (auc, *_percentile_ci(replicates, alpha))


def _rank_auc(y_true: np.ndarray, y_score: np.ndarray) -> float:
    """AUC as the Mann-Whitney statistic (fast, for bootstrap loops); NaN with one class."""
    positive = y_true == 1
    m = int(positive.sum())
    n = y_true.size - m
    if m == 0 or n == 0:
        return float("nan")
    ranks = stats.rankdata(y_score)
    return float((ranks[positive].sum() - m * (m + 1) / 2) / (m * n))


def _midrank(x: np.ndarray) -> np.ndarray:
    """Mid-ranks (ties share the average rank), 1-based."""
    return stats.rankdata(x, method="average")


def delong_test(y_true: Any, score_a: Any, score_b: Any) -> tuple[float, float]:
    """DeLong test for two correlated ROC AUCs scored on the same cases.

    Fast algorithm of Sun & Xu (IEEE Signal Process Lett 2014): the structural components
    come from mid-ranks instead of all positive/negative pairs. The test treats lesions as
    independent, so with several lesions per patient its p value is somewhat optimistic; use
    the patient-clustered bootstrap (:func:`auc_ci`) for intervals.

    Returns
    -------
    (z, p)
        ``z > 0`` when model A has the larger AUC; two-sided p value.
    """
    y_true = np.asarray(y_true).astype(int)
    scores = np.vstack([np.asarray(score_a, float), np.asarray(score_b, float)])
    positive = y_true == 1
    m, n = int(positive.sum()), int((~positive).sum())
    if m == 0 or n == 0:
        raise DataError("DeLong test needs both classes in y_true")
    pos, neg = scores[:, positive], scores[:, ~positive]
    tx = np.vstack([_midrank(row) for row in pos])
    ty = np.vstack([_midrank(row) for row in neg])
    tz = np.vstack([_midrank(row) for row in np.hstack([pos, neg])])
    aucs = tz[:, :m].sum(axis=1) / (m * n) - (m + 1.0) / (2.0 * n)
    # Structural components: per positive (V10) and per negative (V01) placement values.
    v10 = (tz[:, :m] - tx) / n
    v01 = 1.0 - (tz[:, m:] - ty) / m
    cov = np.atleast_2d(np.cov(v10)) / m + np.atleast_2d(np.cov(v01)) / n
    diff = aucs[0] - aucs[1]
    var = cov[0, 0] + cov[1, 1] - 2 * cov[0, 1]
    if var <= 0:
        return (0.0, 1.0) if diff == 0 else (float(np.sign(diff) * np.inf), 0.0)
    z = float(diff / np.sqrt(var))
    return z, float(2 * stats.norm.sf(abs(z)))


def calibration_intercept_slope(y_true: Any, y_prob: Any) -> tuple[float, float]:
    """Calibration intercept (calibration-in-the-large) and slope of predicted probabilities.

    Logistic recalibration (Cox 1958; Van Calster et al. 2019): the slope is the coefficient of
    ``logit(p)`` in a logistic model of the outcome; the intercept is estimated with
    ``logit(p)`` as an offset (slope fixed at 1). Perfect calibration gives (0, 1); a slope
    below 1 means predictions are too extreme (overfitting), typical of external validation.
    """
    import statsmodels.api as sm

    y_true = np.asarray(y_true, dtype=float)
    p = np.clip(np.asarray(y_prob, dtype=float), 1e-6, 1 - 1e-6)
    if np.unique(y_true).size < 2:
        raise DataError("calibration needs both outcome classes")
    logit = np.log(p / (1 - p))
    family = sm.families.Binomial()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # separation warnings on tiny samples; values still usable
        intercept = sm.GLM(y_true, np.ones((y_true.size, 1)), family=family, offset=logit).fit()
        slope = sm.GLM(y_true, sm.add_constant(logit, has_constant="add"), family=family).fit()
    return float(intercept.params[0]), float(slope.params[1])


# -- survival ------------------------------------------------------------------------------
def c_index(event: Any, time: Any, risk: Any) -> float:
    """Harrell's concordance index (higher risk should mean earlier event)."""
    from sksurv.metrics import concordance_index_censored

    event = np.asarray(event).astype(bool)
    if not event.any():
        raise DataError("C-index needs at least one event")
    return float(
        concordance_index_censored(event, np.asarray(time, float), np.asarray(risk, float))[0]
    )


def c_index_ci(
    event: Any,
    time: Any,
    risk: Any,
    groups: Any = None,
    n_boot: int = 1000,
    random_state: Any = None,
    alpha: float = 0.05,
) -> tuple[float, float, float]:
    """Harrell's C-index with a (patient-clustered) percentile bootstrap interval.

    ``groups=None`` resamples rows, right when each row is one patient.
    """
    event = np.asarray(event).astype(bool)
    time = np.asarray(time, float)
    risk = np.asarray(risk, float)
    groups = np.arange(event.size) if groups is None else np.asarray(groups)
    estimate = c_index(event, time, risk)
    replicates = []
    for rows in _cluster_bootstrap(groups, n_boot, random_state):
        if event[rows].any():
            try:
                replicates.append(c_index(event[rows], time[rows], risk[rows]))
            except Exception:
                continue
    return (estimate, *_percentile_ci(replicates, alpha))


def uno_c_index(y_train: Any, y_test: Any, risk: Any, tau: float | None = None) -> float:
    """Uno's IPCW C-index, robust to censoring that depends on follow-up length.

    ``y_train`` (sksurv structured array) supplies the censoring distribution; ``tau`` caps
    the time horizon (default: the largest test time below the training follow-up).
    """
    from sksurv.metrics import concordance_index_ipcw

    y_test = np.asarray(y_test)
    if tau is None:
        tau = _horizon(y_train, y_test)
    return float(concordance_index_ipcw(y_train, y_test, np.asarray(risk, float), tau=tau)[0])


def _time_field(y: np.ndarray) -> str:
    return next(n for n in y.dtype.names if y[n].dtype != np.bool_)


def _event_field(y: np.ndarray) -> str:
    return next(n for n in y.dtype.names if y[n].dtype == np.bool_)


def _horizon(y_train: Any, y_test: Any) -> float:
    """Time horizon where the training censoring distribution is still estimable.

    The inverse-probability-of-censoring weights need the censoring survival function of the
    training data to stay above zero, which fails at (and after) its last time; the 90th
    percentile of training times, capped by the last test time, keeps a safe margin.
    """
    y_train, y_test = np.asarray(y_train), np.asarray(y_test)
    train_q90 = np.percentile(y_train[_time_field(y_train)], 90)
    test_max = y_test[_time_field(y_test)].max()
    return float(min(train_q90, test_max * 0.999))


def time_dependent_auc(
    y_train: Any, y_test: Any, risk: Any, times: Any = None
) -> tuple[np.ndarray, np.ndarray, float]:
    """Cumulative/dynamic time-dependent AUC (Uno 2007; Hung & Chiang 2010) via sksurv.

    Parameters
    ----------
    times : array-like, optional
        Evaluation times; default: the 25th, 50th and 75th percentiles of the test event
        times, kept inside the follow-up window.

    Returns
    -------
    (times, auc, mean_auc)
    """
    from sksurv.metrics import cumulative_dynamic_auc

    y_train, y_test = np.asarray(y_train), np.asarray(y_test)
    if times is None:
        t_test = y_test[_time_field(y_test)]
        events = t_test[y_test[_event_field(y_test)]]
        upper = _horizon(y_train, y_test)
        lower = t_test.min()
        times = np.percentile(events, [25, 50, 75]) if events.size else np.array([])
        times = np.unique(times[(times > lower) & (times < upper)])
        if times.size == 0:
            raise DataError("no evaluation time inside the follow-up window for time-dependent AUC")
    times = np.asarray(times, float)
    auc, mean_auc = cumulative_dynamic_auc(y_train, y_test, np.asarray(risk, float), times)
    return times, np.asarray(auc), float(mean_auc)


@dataclass
class KaplanMeierGroups:
    """Kaplan-Meier curves of predicted risk groups and their log-rank test."""

    labels: list[str]
    curves: dict[str, tuple[np.ndarray, np.ndarray]] = field(default_factory=dict)
    counts: dict[str, int] = field(default_factory=dict)
    cutoffs: np.ndarray = field(default_factory=lambda: np.array([]))
    chi2: float = float("nan")
    p_value: float = float("nan")


def km_by_risk_group(
    time: Any,
    event: Any,
    risk: Any,
    n_groups: int = 2,
    cutoffs: Any = None,
) -> KaplanMeierGroups:
    """Kaplan-Meier curves by predicted risk group, with a log-rank test.

    Parameters
    ----------
    cutoffs : array-like, optional
        Risk thresholds between groups. For external validation pass the thresholds learnt on
        the development cohort (e.g. its median risk) so the test cohort does not define its
        own groups; default: quantiles of ``risk`` itself.
    """
    from sksurv.compare import compare_survival
    from sksurv.nonparametric import kaplan_meier_estimator
    from sksurv.util import Surv

    time = np.asarray(time, float)
    event = np.asarray(event).astype(bool)
    risk = np.asarray(risk, float)
    if cutoffs is None:
        cutoffs = np.quantile(risk, np.linspace(0, 1, n_groups + 1)[1:-1])
    cutoffs = np.atleast_1d(np.asarray(cutoffs, float))
    group = np.searchsorted(cutoffs, risk, side="right")
    names = ["low risk", "high risk"] if cutoffs.size == 1 else [
        f"risk group {k + 1}" for k in range(cutoffs.size + 1)
    ]
    result = KaplanMeierGroups(labels=names, cutoffs=cutoffs)
    for k, name in enumerate(names):
        rows = group == k
        result.counts[name] = int(rows.sum())
        if rows.any():
            result.curves[name] = kaplan_meier_estimator(event[rows], time[rows])[:2]
    present = np.unique(group)
    if present.size >= 2 and event.any():
        chi2, p = compare_survival(Surv.from_arrays(event, time), group)
        result.chi2, result.p_value = float(chi2), float(p)
    return result
