"""Preprocessing transformers: the sklearn contract, the filters' rules and ComBat."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from sklearn.utils.estimator_checks import parametrize_with_checks

from irtscope.imaging._preprocess import (
    ComBatHarmonizer,
    CorrelationFilter,
    NearZeroVarianceFilter,
)


@parametrize_with_checks(
    [NearZeroVarianceFilter(), CorrelationFilter(), ComBatHarmonizer(batch_column=None)]
)
def test_sklearn_contract(estimator, check) -> None:
    check(estimator)


def _sites(seed: int = 0, n: int = 60, n_features: int = 12) -> pd.DataFrame:
    """Three sites sharing biology but with site-specific shifts and scales."""
    rng = np.random.default_rng(seed)
    frames = []
    for site, shift, scale in (("A", 0.0, 1.0), ("B", 3.0, 2.0), ("C", -2.0, 0.5)):
        biology = rng.normal(size=(n, n_features))
        frame = pd.DataFrame(
            10 + biology * scale + shift, columns=[f"original_f{j}" for j in range(n_features)]
        )
        frame.insert(0, "cohort", site)
        frames.append(frame)
    return pd.concat(frames, ignore_index=True)


def test_combat_removes_site_effects_on_training_sites() -> None:
    data = _sites()
    train = data[data.cohort.isin(["A", "B"])]
    raw_gap = abs(train[train.cohort == "A"].iloc[:, 1:].mean() - train[train.cohort == "B"]
                  .iloc[:, 1:].mean()).mean()
    out = ComBatHarmonizer(batch_column="cohort").fit_transform(train)
    assert out.shape == (len(train), train.shape[1] - 1)  # batch column dropped
    a, b = out[(train.cohort == "A").to_numpy()], out[(train.cohort == "B").to_numpy()]
    assert abs(a.mean(axis=0) - b.mean(axis=0)).mean() < 0.1 * raw_gap
    assert np.allclose(a.std(axis=0) / b.std(axis=0), 1.0, atol=0.3)


def test_combat_location_scale_without_eb_is_exact() -> None:
    data = _sites(1)
    out = ComBatHarmonizer(batch_column="cohort", eb=False).fit_transform(data)
    means = [out[(data.cohort == s).to_numpy()].mean(axis=0) for s in "ABC"]
    stds = [out[(data.cohort == s).to_numpy()].std(axis=0, ddof=1) for s in "ABC"]
    np.testing.assert_allclose(means[0], means[1], atol=1e-9)
    np.testing.assert_allclose(means[0], means[2], atol=1e-9)
    np.testing.assert_allclose(stds[0], stds[2], rtol=1e-9)


def test_combat_fitted_on_two_sites_transforms_an_unseen_third() -> None:
    data = _sites(2)
    train, unseen = data[data.cohort != "C"], data[data.cohort == "C"]
    harmonizer = ComBatHarmonizer(batch_column="cohort").fit(train)
    assert list(harmonizer.batches_) == ["A", "B"]
    out = harmonizer.transform(unseen)
    assert out.shape == (len(unseen), unseen.shape[1] - 1)
    assert np.all(np.isfinite(out))
    # The unseen site lands on the training reference location and scale.
    reference = harmonizer.transform(train)
    assert abs(out.mean(axis=0) - reference.mean(axis=0)).max() < 0.5
    raw_shift = abs(unseen.iloc[:, 1:].mean() - train.iloc[:, 1:].mean()).mean()
    assert abs(out.mean(axis=0) - reference.mean(axis=0)).mean() < 0.2 * raw_shift
    assert np.allclose(out.std(axis=0) / reference.std(axis=0), 1.0, atol=0.35)
    # Seen sites are transformed row by row: a subset gives the same rows.
    np.testing.assert_allclose(harmonizer.transform(train.iloc[:5]), reference[:5])
    assert list(harmonizer.get_feature_names_out()) == list(train.columns[1:])


def test_combat_tiny_unseen_site_falls_back_to_reference() -> None:
    data = _sites(3)
    harmonizer = ComBatHarmonizer(batch_column="cohort", min_batch_size=5)
    harmonizer.fit(data[data.cohort != "C"])
    single = data[data.cohort == "C"].iloc[:3]
    np.testing.assert_allclose(harmonizer.transform(single), single.iloc[:, 1:].to_numpy())


def test_combat_errors_name_the_problem() -> None:
    data = _sites()
    with pytest.raises(ValueError, match="batch column 'scanner'"):
        ComBatHarmonizer(batch_column="scanner").fit(data)
    with pytest.raises(ValueError, match="integer batch_column"):
        ComBatHarmonizer(batch_column="cohort").fit(data.to_numpy())
    # Array input with a positional batch column works too.
    out = ComBatHarmonizer(batch_column=0).fit_transform(data.to_numpy())
    assert out.shape == (len(data), data.shape[1] - 1)


def test_combat_keeps_constant_features() -> None:
    data = _sites()
    data["original_const"] = 7.0
    out = ComBatHarmonizer().fit_transform(data)
    np.testing.assert_allclose(out[:, -1], 7.0)


def test_near_zero_variance_rules() -> None:
    rng = np.random.default_rng(0)
    X = pd.DataFrame(
        {
            "constant": np.ones(100),
            "rare": np.r_[np.zeros(98), [1.0, 2.0]],  # 98/1 ratio and 3% unique: dropped
            "binary": np.r_[np.zeros(50), np.ones(50)],  # balanced: kept
            "noise": rng.normal(size=100),
        }
    )
    selector = NearZeroVarianceFilter().fit(X)
    assert list(selector.get_feature_names_out()) == ["binary", "noise"]


def test_correlation_filter_drops_the_redundant_feature() -> None:
    rng = np.random.default_rng(0)
    a = rng.normal(size=200)
    X = pd.DataFrame(
        {
            "volume": a,
            "volume_copy": a * 3 + rng.normal(0, 0.01, 200),
            "diameter": a + rng.normal(0, 0.05, 200),
            "texture": rng.normal(size=200),
        }
    )
    kept = CorrelationFilter(threshold=0.9).fit(X).get_feature_names_out()
    assert "texture" in kept
    assert sum(name in kept for name in ("volume", "volume_copy", "diameter")) == 1
    with pytest.raises(ValueError, match="method"):
        CorrelationFilter(method="kendall").fit(X)
