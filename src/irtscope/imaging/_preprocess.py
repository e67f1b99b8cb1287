"""Feature preprocessing transformers: near-zero-variance and correlation filters, ComBat.

All three follow the scikit-learn estimator contract (``__init__`` stores, ``fit`` learns
``*_`` attributes and returns ``self``) so they compose in a :class:`~sklearn.pipeline.Pipeline`
and are refitted inside every cross-validation fold: a filter or a harmonisation fitted on the
whole data set would leak test-fold information into training and inflate the AUC.

ComBat and the batch
--------------------
ComBat needs to know which batch (cohort or scanner) each row comes from, but a scikit-learn
transformer only receives ``X``. We therefore take the batch as a *column of X*
(``batch_column``: a column name for a DataFrame, a column position for an array). The
column is used to estimate and remove batch effects and is *dropped* from the output, so the
next step only sees harmonised features. This keeps the transformer usable in a plain
``Pipeline``/``ColumnTransformer`` with no metadata routing, and makes the batch travel with
each row through every split.

Unseen sites
------------
The reference study validates on external cohorts the model never saw. Standard ComBat
(and the ``neuroCombat`` package) estimates batch parameters only for the batches present at
fit time and cannot transform a new one. Here, at ``transform`` time, a batch that was not seen
during ``fit`` is standardised with the *training* pooled location and scale (the reference),
then its own location/scale offsets are estimated from its own rows with the same empirical
Bayes shrinkage (priors computed across features of that batch, as in Johnson et al. 2007), and
removed. No outcome labels are used, so this is legitimate for external validation. A new batch
with fewer than ``min_batch_size`` rows cannot be estimated reliably; it is passed through
unchanged (the training reference), which is the conservative fallback.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
from sklearn.base import BaseEstimator, TransformerMixin
from sklearn.feature_selection import SelectorMixin
from sklearn.utils.validation import check_is_fitted, validate_data

__all__ = ["ComBatHarmonizer", "CorrelationFilter", "NearZeroVarianceFilter"]


class NearZeroVarianceFilter(SelectorMixin, BaseEstimator):
    """Drop features that are constant or nearly so (caret's ``nearZeroVar`` rule).

    Radiomics features computed on small lesions are often constant for most lesions and
    differ for a handful; such features carry no signal but make random forests and ComBat
    unstable. A feature is dropped when its variance is at most ``threshold``, or when it is
    *both* dominated by one value (ratio of the most to the second most frequent value above
    ``freq_ratio``) *and* has few distinct values (percentage of unique values below
    ``unique_percent``).

    Parameters
    ----------
    threshold : float, default=0.0
        Features with variance ``<= threshold`` are always dropped.
    freq_ratio : float, default=19.0
        Most-common / second-most-common frequency ratio above which a feature is suspect
        (caret's ``freqCut = 95/5``).
    unique_percent : float, default=10.0
        Percentage of distinct values below which a suspect feature is dropped.

    Attributes
    ----------
    variances_ : ndarray of shape (n_features,)
    support_ : ndarray of bool, shape (n_features,)
        True for kept features.
    n_features_in_ : int
    feature_names_in_ : ndarray of str
        Only when fitted on a DataFrame with string column names.
    """

    def __init__(
        self, threshold: float = 0.0, freq_ratio: float = 19.0, unique_percent: float = 10.0
    ) -> None:
        self.threshold = threshold
        self.freq_ratio = freq_ratio
        self.unique_percent = unique_percent

    def fit(self, X: Any, y: Any = None) -> NearZeroVarianceFilter:
        """Learn which features to keep; ``y`` is ignored."""
        X = validate_data(self, X, dtype=np.float64, ensure_all_finite="allow-nan")
        n_samples = X.shape[0]
        self.variances_ = np.nanvar(X, axis=0) if n_samples > 0 else np.zeros(X.shape[1])
        support = np.ones(X.shape[1], dtype=bool)
        for j in range(X.shape[1]):
            column = X[:, j]
            column = column[~np.isnan(column)]
            if column.size == 0 or self.variances_[j] <= self.threshold:
                support[j] = False
                continue
            _, counts = np.unique(column, return_counts=True)
            if counts.size < 2:
                support[j] = False
                continue
            top = np.sort(counts)[::-1]
            ratio = top[0] / top[1]
            percent_unique = 100.0 * counts.size / column.size
            if ratio > self.freq_ratio and percent_unique < self.unique_percent:
                support[j] = False
        self.support_ = support
        return self

    def _get_support_mask(self) -> np.ndarray:
        check_is_fitted(self, "support_")
        return self.support_

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.input_tags.allow_nan = True
        return tags


class CorrelationFilter(SelectorMixin, BaseEstimator):
    """Drop one feature of every highly correlated pair.

    Many radiomics features are near-duplicates (e.g. several size measures). The filter keeps
    a compact, less redundant set so the forest's feature sampling is not dominated by one
    family. Among a correlated pair, the feature with the larger mean absolute correlation to
    all others is dropped (caret's ``findCorrelation``), and the search repeats until no pair
    exceeds ``threshold``. Ties keep the earlier column, so the result is deterministic.

    Parameters
    ----------
    threshold : float, default=0.95
        Absolute correlation above which a pair is redundant.
    method : {"pearson", "spearman"}, default="spearman"
        Spearman is robust to the heavy tails common in texture features.

    Attributes
    ----------
    support_ : ndarray of bool, shape (n_features,)
    n_features_in_ : int
    feature_names_in_ : ndarray of str
    """

    def __init__(self, threshold: float = 0.95, method: str = "spearman") -> None:
        self.threshold = threshold
        self.method = method

    def fit(self, X: Any, y: Any = None) -> CorrelationFilter:
        """Learn which features to keep; ``y`` is ignored."""
        if self.method not in ("pearson", "spearman"):
            raise ValueError(f"method must be 'pearson' or 'spearman', got {self.method!r}")
        X = validate_data(self, X, dtype=np.float64)
        n_features = X.shape[1]
        support = np.ones(n_features, dtype=bool)
        if X.shape[0] < 3 or n_features < 2:
            self.support_ = support
            return self
        data = X
        if self.method == "spearman":
            data = pd.DataFrame(X).rank(axis=0).to_numpy()
        std = data.std(axis=0)
        constant = std == 0
        centred = np.where(constant, 0.0, data - data.mean(axis=0))
        scale = np.where(constant, 1.0, std)
        z = centred / scale
        corr = np.abs(z.T @ z / data.shape[0])
        np.fill_diagonal(corr, 0.0)
        corr[constant, :] = 0.0
        corr[:, constant] = 0.0
        while True:
            active = np.flatnonzero(support)
            sub = corr[np.ix_(active, active)]
            if sub.size == 0 or sub.max() <= self.threshold:
                break
            i, j = np.unravel_index(np.argmax(sub), sub.shape)
            i, j = min(i, j), max(i, j)
            mean_i = sub[i].mean()
            mean_j = sub[j].mean()
            drop = active[i] if mean_i > mean_j else active[j]
            support[drop] = False
        self.support_ = support
        return self

    def _get_support_mask(self) -> np.ndarray:
        check_is_fitted(self, "support_")
        return self.support_


def _eb_prior(gamma_hat: np.ndarray, delta_hat: np.ndarray) -> tuple[float, float, float, float]:
    """Hyper-parameters of the ComBat priors, estimated across features (method of moments)."""
    gamma_bar = float(np.mean(gamma_hat))
    tau2 = float(np.var(gamma_hat, ddof=1)) if gamma_hat.size > 1 else 0.0
    mean_d = float(np.mean(delta_hat))
    var_d = float(np.var(delta_hat, ddof=1)) if delta_hat.size > 1 else 0.0
    if var_d > 0:
        a_prior = (2.0 * var_d + mean_d**2) / var_d
        b_prior = (mean_d * var_d + mean_d**3) / var_d
    else:
        a_prior = b_prior = np.nan
    return gamma_bar, tau2, a_prior, b_prior


def _eb_batch(
    z: np.ndarray, eb: bool, max_iter: int = 1000, tol: float = 1e-4
) -> tuple[np.ndarray, np.ndarray]:
    """Location (gamma*) and scale (delta*) of one batch of standardised data ``z``.

    Parametric empirical Bayes of Johnson, Li & Rabinovic (2007): gamma ~ N(gamma_bar, tau2),
    delta ~ InverseGamma(a, b), solved by the usual fixed-point iteration. Falls back to the
    plain per-batch estimates when a prior cannot be estimated (one feature, or no spread).
    """
    n = z.shape[0]
    gamma_hat = z.mean(axis=0)
    if n < 2:
        # One row has no variance: remove the location shift only.
        return gamma_hat, np.ones_like(gamma_hat)
    delta_hat = z.var(axis=0, ddof=1)
    delta_hat = np.where(delta_hat > 0, delta_hat, 1.0)
    if not eb:
        return gamma_hat, delta_hat
    gamma_bar, tau2, a_prior, b_prior = _eb_prior(gamma_hat, delta_hat)
    if not (tau2 > 0 and np.isfinite(a_prior) and np.isfinite(b_prior)):
        return gamma_hat, delta_hat
    gamma_old, delta_old = gamma_hat.copy(), delta_hat.copy()
    for _ in range(max_iter):
        gamma_new = (n * tau2 * gamma_hat + delta_old * gamma_bar) / (n * tau2 + delta_old)
        sum2 = ((z - gamma_new) ** 2).sum(axis=0)
        delta_new = (0.5 * sum2 + b_prior) / (n / 2.0 + a_prior - 1.0)
        change = max(
            np.max(np.abs(gamma_new - gamma_old) / np.maximum(np.abs(gamma_old), 1e-12)),
            np.max(np.abs(delta_new - delta_old) / np.maximum(np.abs(delta_old), 1e-12)),
        )
        gamma_old, delta_old = gamma_new, delta_new
        if change < tol:
            break
    return gamma_old, delta_old


class ComBatHarmonizer(TransformerMixin, BaseEstimator):
    """ComBat harmonisation of features across batches (cohorts or scanners).

    Removes additive (location) and multiplicative (scale) batch effects per feature with
    empirical Bayes shrinkage (Johnson et al., Biostatistics 2007), the standard remedy for
    scanner/protocol differences in multi-centre radiomics. No biological covariates are
    modelled: protecting outcome covariates would require the labels at transform time, which
    external validation must not use.

    Parameters
    ----------
    batch_column : str, int or None, default="cohort"
        Column of ``X`` holding the batch label: a column name (DataFrame input) or a column
        position (array input). It is dropped from the output. ``None`` treats all rows as
        one batch (useful only for testing the estimator contract).
    eb : bool, default=True
        Use empirical Bayes shrinkage; ``False`` uses the raw per-batch estimates (L/S).
    min_batch_size : int, default=2
        An unseen batch with fewer rows is passed through unadjusted (see module docstring).

    Attributes
    ----------
    batches_ : ndarray
        Batch labels seen during ``fit``.
    mean_ : ndarray of shape (n_features_out,)
        Pooled grand mean (sample-size weighted), the reference location.
    scale_ : ndarray of shape (n_features_out,)
        Pooled within-batch standard deviation, the reference scale.
    gamma_ : dict
        Batch label -> fitted location offsets (standardised units).
    delta_ : dict
        Batch label -> fitted scale factors (variance, standardised units).
    feature_names_out_ : ndarray of str
    n_features_in_ : int
    feature_names_in_ : ndarray of str
        Only when fitted on a DataFrame with string column names.
    """

    def __init__(
        self, batch_column: str | int | None = "cohort", eb: bool = True, min_batch_size: int = 2
    ) -> None:
        self.batch_column = batch_column
        self.eb = eb
        self.min_batch_size = min_batch_size

    # -- input handling -------------------------------------------------------------------
    def _split(self, X: Any, reset: bool) -> tuple[np.ndarray, np.ndarray]:
        """Separate the batch labels from the numeric features."""
        if self.batch_column is None:
            data = validate_data(self, X, dtype=np.float64, reset=reset)
            return data, np.zeros(data.shape[0], dtype=np.int64)
        if isinstance(X, pd.DataFrame):
            if isinstance(self.batch_column, str):
                if self.batch_column not in X.columns:
                    raise ValueError(
                        f"ComBatHarmonizer: batch column {self.batch_column!r} not in X "
                        f"(columns: {list(X.columns)[:8]}...); pass the cohort/scanner column"
                    )
                position = list(X.columns).index(self.batch_column)
            else:
                position = int(self.batch_column)
            batch = X.iloc[:, position].to_numpy()
            features = X.drop(columns=X.columns[position])
        else:
            if not isinstance(self.batch_column, int | np.integer):
                raise ValueError(
                    "ComBatHarmonizer: array input needs an integer batch_column "
                    f"(got {self.batch_column!r}); use a DataFrame for a named column"
                )
            array = np.asarray(X, dtype=object)
            if array.ndim != 2:
                raise ValueError(f"Expected 2D input, got array of shape {array.shape}")
            batch = array[:, self.batch_column]
            features = np.delete(array, self.batch_column, axis=1)
        if reset and isinstance(X, pd.DataFrame):
            self.feature_names_in_ = np.asarray(X.columns, dtype=object)
            self.n_features_in_ = X.shape[1]
            data = _as_float(features)
            self.feature_names_out_ = np.asarray(
                [str(c) for c in features.columns], dtype=object
            )
        elif reset:
            data = _as_float(features)
            self.n_features_in_ = data.shape[1] + 1
            self.feature_names_out_ = np.asarray(
                [f"x{i}" for i in range(self.n_features_in_) if i != self.batch_column],
                dtype=object,
            )
        else:
            data = _as_float(features)
            expected = len(self.feature_names_out_)
            if data.shape[1] != expected:
                raise ValueError(
                    f"X has {data.shape[1] + 1} features, but ComBatHarmonizer is expecting "
                    f"{expected + 1} features as input (including the batch column)"
                )
            if (
                isinstance(X, pd.DataFrame)
                and hasattr(self, "feature_names_in_")
                and list(X.columns) != list(self.feature_names_in_)
            ):
                raise ValueError(
                    "ComBatHarmonizer: the feature names should match those that were "
                    "passed during fit"
                )
        return data, batch

    # -- estimator API --------------------------------------------------------------------
    def fit(self, X: Any, y: Any = None) -> ComBatHarmonizer:
        """Estimate the reference location/scale and each batch's offsets; ``y`` is ignored."""
        data, batch = self._split(X, reset=True)
        if data.shape[0] < 1:
            raise ValueError("ComBatHarmonizer needs at least 1 sample")
        labels, inverse, counts = np.unique(batch, return_inverse=True, return_counts=True)
        batch_means = np.vstack([data[inverse == k].mean(axis=0) for k in range(labels.size)])
        weights = counts / counts.sum()
        self.mean_ = weights @ batch_means
        residual = data - batch_means[inverse]
        scale = np.sqrt((residual**2).mean(axis=0))
        self.scale_ = np.where(scale > 0, scale, 1.0)
        self._constant = scale <= 0
        z = self._standardise(data)
        self.batches_ = labels
        self.gamma_ = {}
        self.delta_ = {}
        for k, label in enumerate(labels):
            gamma, delta = _eb_batch(z[inverse == k], self.eb)
            self.gamma_[label] = gamma
            self.delta_[label] = delta
        return self

    def _standardise(self, data: np.ndarray) -> np.ndarray:
        z = (data - self.mean_) / self.scale_
        z[:, self._constant] = 0.0
        return z

    def transform(self, X: Any) -> np.ndarray:
        """Harmonise ``X``; batches unseen at fit are estimated from their own rows."""
        check_is_fitted(self, "gamma_")
        data, batch = self._split(X, reset=False)
        z = self._standardise(data)
        out = np.empty_like(z)
        for label in pd.unique(batch):
            rows = batch == label
            if label in self.gamma_:
                gamma, delta = self.gamma_[label], self.delta_[label]
            elif rows.sum() >= max(self.min_batch_size, 1):
                gamma, delta = _eb_batch(z[rows], self.eb)
            else:
                gamma, delta = np.zeros(z.shape[1]), np.ones(z.shape[1])
            out[rows] = (z[rows] - gamma) / np.sqrt(delta)
        result = out * self.scale_ + self.mean_
        result[:, self._constant] = data[:, self._constant]
        return result

    def get_feature_names_out(self, input_features: Any = None) -> np.ndarray:
        """Input feature names without the batch column."""
        check_is_fitted(self, "feature_names_out_")
        return self.feature_names_out_.copy()


def _as_float(features: Any) -> np.ndarray:
    """Numeric feature block as float64, with a message naming non-numeric columns."""
    try:
        data = np.asarray(features, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"ComBatHarmonizer: features must be numeric ({exc})") from exc
    if data.ndim != 2:
        raise ValueError(f"Expected 2D input, got array of shape {data.shape}")
    if not np.all(np.isfinite(data)):
        raise ValueError("Input X contains NaN or infinity; impute before ComBatHarmonizer")
    return data
