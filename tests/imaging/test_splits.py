"""No patient's lesions may sit on both sides of any split (outer folds or nested tuning)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from sklearn.base import BaseEstimator, ClassifierMixin
from sklearn.model_selection import GridSearchCV
from sksurv.util import Surv

from irtscope.imaging._evaluate import (
    PatientStratifiedGroupKFold,
    grouped_cv_predict,
    grouped_splits,
)

#: Every fit/predict call of every SpyClassifier clone: (kind, frozenset of patient ids).
CALLS: list[tuple[str, frozenset]] = []


class SpyClassifier(ClassifierMixin, BaseEstimator):
    """Records which patients (the DataFrame index) it is fitted on and asked to score."""

    def __init__(self, c: float = 1.0) -> None:
        self.c = c

    def fit(self, X: pd.DataFrame, y) -> SpyClassifier:
        CALLS.append(("fit", frozenset(X.index)))
        self.classes_ = np.unique(y)
        return self

    def predict_proba(self, X: pd.DataFrame) -> np.ndarray:
        CALLS.append(("predict", frozenset(X.index)))
        p = 1 / (1 + np.exp(-self.c * X["x"].to_numpy()))
        return np.column_stack([1 - p, p])

    def predict(self, X: pd.DataFrame) -> np.ndarray:
        return (self.predict_proba(X)[:, 1] > 0.5).astype(int)


def _lesions(seed: int = 0) -> tuple[pd.DataFrame, np.ndarray]:
    rng = np.random.default_rng(seed)
    n_lesions = rng.integers(1, 6, 60)  # 60 patients with 1-5 lesions each
    patients = np.repeat([f"P{i:03d}" for i in range(60)], n_lesions)
    X = pd.DataFrame({"x": rng.normal(size=patients.size)}, index=pd.Index(patients))
    y = (rng.uniform(size=patients.size) < 0.4).astype(int)
    return X, y


def _assert_disjoint_calls() -> int:
    """Every predict call must score only patients absent from the latest fit."""
    checked = 0
    last_fit: frozenset | None = None
    for kind, patients in CALLS:
        if kind == "fit":
            last_fit = patients
        else:
            assert last_fit is not None
            overlap = last_fit & patients
            assert not overlap, f"patients on both sides of a split: {sorted(overlap)[:5]}"
            checked += 1
    return checked


@pytest.mark.parametrize("seed", [0, 1])
def test_grouped_split_indices_never_share_patients(seed: int) -> None:
    X, y = _lesions(seed)
    groups = X.index.to_numpy()
    covered = np.zeros(len(y), dtype=int)
    for train, test in grouped_splits(y, groups, n_splits=5, random_state=seed):
        assert not set(groups[train]) & set(groups[test])
        covered[test] += 1
    assert np.all(covered == 1)  # every lesion is tested exactly once


def test_outer_cv_predict_is_patient_disjoint() -> None:
    CALLS.clear()
    X, y = _lesions()
    scores = grouped_cv_predict(SpyClassifier(), X, y, X.index, n_splits=5, random_state=0)
    assert scores.shape == (len(y),)
    assert _assert_disjoint_calls() == 5


def test_nested_tuning_is_patient_disjoint() -> None:
    CALLS.clear()
    X, y = _lesions(1)
    inner = PatientStratifiedGroupKFold(n_splits=3, shuffle=True, random_state=0)
    search = GridSearchCV(SpyClassifier(), {"c": [0.5, 2.0]}, cv=inner, scoring="roc_auc")
    grouped_cv_predict(search, X, y, X.index, n_splits=4, random_state=0)
    # 4 outer folds x (2 candidates x 3 inner folds + 1 outer prediction)
    assert _assert_disjoint_calls() == 4 * (2 * 3 + 1)


def test_spy_detects_a_leaky_split() -> None:
    # The check itself must be able to fail: lesion-level KFold leaks patients.
    from sklearn.model_selection import KFold

    CALLS.clear()
    X, y = _lesions(2)
    for train, test in KFold(5, shuffle=True, random_state=0).split(X):
        SpyClassifier().fit(X.iloc[train], y[train]).predict_proba(X.iloc[test])
    with pytest.raises(AssertionError, match="both sides"):
        _assert_disjoint_calls()


def test_survival_target_stratifies_by_event() -> None:
    rng = np.random.default_rng(0)
    groups = np.arange(100)
    event = rng.uniform(size=100) < 0.3
    y = Surv.from_arrays(event, rng.uniform(1, 50, 100))
    for train, test in grouped_splits(y, groups, n_splits=5, random_state=0):
        assert 3 <= event[test].sum() <= 9  # ~6 events per fold
        assert not set(groups[train]) & set(groups[test])


def test_combat_is_fitted_on_training_patients_only(monkeypatch: pytest.MonkeyPatch) -> None:
    """ComBat lives inside the pipeline: every fit (outer folds and nested tuning) sees only
    training patients, never the patients it will then score (nor everyone at once)."""
    from irtscope.imaging._models import make_radiomics_classifier, make_tuned
    from irtscope.imaging._preprocess import ComBatHarmonizer

    fits: list[frozenset] = []
    original = ComBatHarmonizer.fit

    def spy(self, X, y=None):
        fits.append(frozenset(X.index))
        return original(self, X, y)

    monkeypatch.setattr(ComBatHarmonizer, "fit", spy)
    X, y = _lesions(3)
    rng = np.random.default_rng(3)
    X = X.assign(
        original_firstorder_a=X["x"] + rng.normal(size=len(X)),
        original_firstorder_b=rng.normal(size=len(X)),
        cohort=np.where(rng.uniform(size=len(X)) < 0.5, "A", "B"),
    )
    model = make_radiomics_classifier(
        ["original_firstorder_a", "original_firstorder_b"], harmonize=True, n_estimators=5,
        random_state=0,
    )
    search = make_tuned(model, {"model__min_samples_leaf": [1, 3]}, inner_splits=2,
                        random_state=0)
    groups = X.index.to_numpy()
    grouped_cv_predict(search, X, y, groups, n_splits=3, random_state=0)
    folds = grouped_splits(y, groups, n_splits=3, random_state=0)
    assert len(fits) == 3 * (2 * 2 + 1)  # per outer fold: 2 candidates x 2 inner + refit
    everyone = frozenset(groups)
    for fitted in fits:
        assert fitted != everyone
        assert any(
            fitted <= set(groups[train]) and not fitted & set(groups[test])
            for train, test in folds
        ), "ComBat was fitted on patients of a test fold"
