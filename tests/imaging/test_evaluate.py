"""Metric functions: values against brute force / references, intervals, edge cases."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import stats
from sklearn.metrics import roc_auc_score
from sksurv.util import Surv

from irtscope import DataError
from irtscope.imaging._evaluate import (
    auc_ci,
    c_index,
    c_index_ci,
    calibration_intercept_slope,
    delong_test,
    km_by_risk_group,
    time_dependent_auc,
    uno_c_index,
)


def _brute_force_delong(y, a, b):
    """DeLong et al. (1988) from the full positive x negative kernel matrix."""
    y = np.asarray(y)
    comps = []
    for s in (a, b):
        pos, neg = s[y == 1], s[y == 0]
        psi = (pos[:, None] > neg[None, :]).astype(float) + 0.5 * (pos[:, None] == neg[None, :])
        comps.append((psi.mean(), psi.mean(axis=1), psi.mean(axis=0)))
    m, n = (y == 1).sum(), (y == 0).sum()
    v10 = np.vstack([c[1] for c in comps])
    v01 = np.vstack([c[2] for c in comps])
    cov = np.cov(v10) / m + np.cov(v01) / n
    diff = comps[0][0] - comps[1][0]
    z = diff / np.sqrt(cov[0, 0] + cov[1, 1] - 2 * cov[0, 1])
    return z, 2 * stats.norm.sf(abs(z))


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_delong_matches_brute_force(seed: int) -> None:
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, 80)
    a = y + rng.normal(0, 1.0, 80)
    b = np.round(y * 0.5 + rng.normal(0, 1.0, 80), 1)  # rounded: exercises ties
    z, p = delong_test(y, a, b)
    z_ref, p_ref = _brute_force_delong(y, a, b)
    assert z == pytest.approx(z_ref, rel=1e-9)
    assert p == pytest.approx(p_ref, rel=1e-9)


def test_delong_identical_models_and_sign() -> None:
    rng = np.random.default_rng(3)
    y = rng.integers(0, 2, 60)
    a = y * 2 + rng.normal(size=60)
    assert delong_test(y, a, a) == (0.0, 1.0)
    z, p = delong_test(y, a, rng.normal(size=60))
    assert z > 0 and p < 0.05
    with pytest.raises(DataError):
        delong_test(np.ones(5), a[:5], a[:5])


def test_auc_ci_patient_clustered() -> None:
    rng = np.random.default_rng(0)
    patients = np.repeat(np.arange(40), 3)
    y = rng.integers(0, 2, patients.size)
    score = y + rng.normal(0, 1.5, patients.size)
    auc, lower, upper = auc_ci(y, score, patients, n_boot=200, random_state=0)
    assert auc == pytest.approx(roc_auc_score(y, score))
    assert lower < auc < upper
    # Deterministic under a fixed seed.
    assert auc_ci(y, score, patients, n_boot=200, random_state=0) == (auc, lower, upper)


def test_clustered_bootstrap_is_wider_for_correlated_lesions() -> None:
    # Lesions of one patient are copies of each other: resampling lesions would pretend
    # there are 3x more independent cases than there are.
    rng = np.random.default_rng(1)
    y_patient = rng.integers(0, 2, 50)
    s_patient = y_patient + rng.normal(0, 1.5, 50)
    y, score = np.repeat(y_patient, 4), np.repeat(s_patient, 4)
    patients = np.repeat(np.arange(50), 4)
    _, lo_c, hi_c = auc_ci(y, score, patients, n_boot=300, random_state=0)
    _, lo_n, hi_n = auc_ci(y, score, np.arange(y.size), n_boot=300, random_state=0)
    assert (hi_c - lo_c) > 1.5 * (hi_n - lo_n)


def test_calibration_intercept_slope() -> None:
    rng = np.random.default_rng(0)
    p = rng.uniform(0.05, 0.95, 4000)
    y = rng.uniform(size=p.size) < p
    intercept, slope = calibration_intercept_slope(y, p)
    assert intercept == pytest.approx(0.0, abs=0.15)
    assert slope == pytest.approx(1.0, abs=0.15)
    # Over-confident predictions (logits doubled) have slope ~ 1/2.
    logit = np.log(p / (1 - p))
    _, slope_over = calibration_intercept_slope(y, 1 / (1 + np.exp(-2 * logit)))
    assert slope_over == pytest.approx(0.5, abs=0.1)


def _survival_data(seed: int = 0, n: int = 200):
    rng = np.random.default_rng(seed)
    risk = rng.normal(size=n)
    event_time = rng.exponential(np.exp(-risk) * 12)
    censor_time = rng.uniform(0, 30, n)
    time = np.minimum(event_time, censor_time)
    event = event_time <= censor_time
    return event, time, risk


def test_c_index_brute_force_and_ci() -> None:
    event, time, risk = _survival_data()
    concordant = comparable = 0.0
    for i in range(time.size):
        if not event[i]:
            continue
        for j in range(time.size):
            if time[j] > time[i]:
                comparable += 1
                concordant += 1.0 if risk[i] > risk[j] else 0.5 if risk[i] == risk[j] else 0.0
    assert c_index(event, time, risk) == pytest.approx(concordant / comparable)
    estimate, lower, upper = c_index_ci(event, time, risk, n_boot=200, random_state=0)
    assert 0.6 < estimate < 0.9 and lower < estimate < upper
    with pytest.raises(DataError):
        c_index(np.zeros(5, bool), time[:5], risk[:5])


def test_uno_and_time_dependent_auc() -> None:
    event, time, risk = _survival_data(1, 300)
    y = Surv.from_arrays(event, time)
    y_train, y_test = y[:200], y[200:]
    uno = uno_c_index(y_train, y_test, risk[200:])
    assert 0.6 < uno < 0.95
    times, aucs, mean_auc = time_dependent_auc(y_train, y_test, risk[200:])
    assert times.size == aucs.size >= 1
    assert 0.55 < mean_auc < 0.95


def test_km_by_risk_group_logrank() -> None:
    event, time, risk = _survival_data(2, 300)
    km = km_by_risk_group(time, event, risk)
    assert km.labels == ["low risk", "high risk"]
    assert sum(km.counts.values()) == 300
    assert km.p_value < 0.01
    for t, s in km.curves.values():
        assert np.all(np.diff(s) <= 1e-12) and s.min() >= 0 and s.max() <= 1
        assert np.all(np.diff(t) >= 0)
    # Externally supplied cut-off: everybody above it is high risk.
    km_ext = km_by_risk_group(time, event, risk, cutoffs=[risk.min() - 1])
    assert km_ext.counts == {"low risk": 0, "high risk": 300}
    assert np.isnan(km_ext.p_value)
