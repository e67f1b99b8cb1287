"""Survival forest on the real Lung1 clinical table (skips without ../shared/data)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from irtscope.imaging._clinical import (
    LUNG1_CLINICAL_FEATURES,
    load_lung1_clinical,
    lung1_survival_target,
)
from irtscope.imaging._evaluate import c_index, c_index_ci, grouped_cv_predict, grouped_splits
from irtscope.imaging._models import make_survival_forest


@pytest.fixture(scope="module")
def lung1(imaging_dir: Path):
    path = imaging_dir / "lung1_clinical" / "lung1_clinical_422.csv"
    if not path.is_file():
        pytest.skip(f"Lung1 clinical table not found at {path}")
    return load_lung1_clinical(path)


def test_loader_codes_missing_values_explicitly(lung1) -> None:
    assert len(lung1) == 422
    assert lung1["patient_id"].is_unique
    # Values outside TNM (T5/Tx, N4/Nx, M3/Mx) become missing, never a fake stage.
    assert set(lung1["t_stage"].dropna().unique()) <= {1.0, 2.0, 3.0, 4.0}
    assert set(lung1["m_stage"].dropna().unique()) <= {0.0, 1.0}
    assert lung1.attrs["missing"]["age"] == int(lung1["age"].isna().sum()) > 0
    assert (lung1["histology"] == "not reported").sum() == lung1.attrs["missing"]["histology"]
    assert lung1["os_event"].dtype == bool
    np.testing.assert_allclose(lung1["os_time"] * 30.4375, lung1["os_days"])


def test_rsf_clinical_cv_c_index_matches_lifelines(lung1) -> None:
    from lifelines.utils import concordance_index

    y = lung1_survival_target(lung1)
    model = make_survival_forest(
        clinical=LUNG1_CLINICAL_FEATURES, n_estimators=60, min_samples_leaf=30, random_state=0
    )
    risk = grouped_cv_predict(
        model, lung1, y, lung1["patient_id"], n_splits=5, random_state=0, method="predict"
    )
    estimate, lower, upper = c_index_ci(
        lung1["os_event"], lung1["os_time"], risk, n_boot=200, random_state=0
    )
    assert lower < estimate < upper
    # Clinical stage carries some prognostic signal in Lung1, if not much.
    assert estimate > 0.52
    # lifelines ranks predicted survival times (higher = longer), so it gets -risk.
    reference = concordance_index(lung1["os_time"], -risk, lung1["os_event"])
    assert abs(c_index(lung1["os_event"], lung1["os_time"], risk) - reference) < 1e-6
    assert abs(estimate - reference) < 1e-6


def test_lung1_folds_are_patient_disjoint(lung1) -> None:
    y = lung1_survival_target(lung1)
    groups = lung1["patient_id"].to_numpy()
    seen = []
    for train, test in grouped_splits(y, groups, n_splits=5, random_state=0):
        assert not set(groups[train]) & set(groups[test])
        assert lung1["os_event"].to_numpy()[test].any()
        seen.extend(test)
    assert sorted(seen) == list(range(len(lung1)))
