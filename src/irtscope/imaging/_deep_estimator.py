"""scikit-learn wrappers: the lesion CNN and a late-fusion stack, for the shared evaluation.

Wrapping the CNN as an estimator lets it go through exactly the same grouped cross-validation,
external validation and bootstrap code as the radiomics forest, so a radiomics-vs-deep
comparison is made on the same lesions, folds and patients (and DeLong-tested on them).
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from sklearn.base import BaseEstimator, ClassifierMixin, clone
from sklearn.utils import check_random_state
from sklearn.utils.validation import check_is_fitted

from irtscope._errors import DataError
from irtscope.imaging._deep import (
    DeepConfig,
    TrainedLesionCNN,
    load_checkpoint,
    load_deep_config,
    save_checkpoint,
    train_lesion_cnn,
)
from irtscope.imaging._patches import lesion_patches

__all__ = ["LateFusionClassifier", "LesionCNNClassifier"]

_RADIOMICS_PREFIXES = ("original_", "wavelet-", "log-sigma-", "square_", "squareroot_",
                       "logarithm_", "exponential_", "gradient_", "lbp-")


def _binary_target(y: Any) -> tuple[np.ndarray, np.ndarray]:
    y = np.asarray(y)
    classes = np.unique(y)
    if classes.size != 2:
        raise DataError(f"binary labels needed (per-lesion PD); got classes {classes.tolist()}")
    return classes, (y == classes[1]).astype(int)


class LesionCNNClassifier(ClassifierMixin, BaseEstimator):
    """3D CNN on lesion-centred patches with the scikit-learn contract.

    Parameters
    ----------
    config : {"small", "full"}, path, dict or DeepConfig, default="small"
        Network, preprocessing and training settings (see :class:`DeepConfig`).
    device : {"auto", "cpu", "cuda"}, default="auto"
    random_state : int, RandomState or None
        Resolved in ``fit``; the only source of randomness (split, init, data order,
        augmentation), so two fits with the same int give the same model.
    cache_dir : path, optional
        Patch cache folder (content-hashed ``.npy``), shared across folds and refits.

    Notes
    -----
    ``X`` is either a manifest-like DataFrame (``lesion_id``, ``patient_id``, ``image_path``,
    ``mask_path``) whose patches are extracted with the config's settings, or an array of
    precomputed patches ``(n, channels, size, size, size)``. With a DataFrame the early-stopping
    split groups by ``patient_id``; with an array pass ``groups=`` to ``fit``.
    """

    def __init__(
        self,
        config: str | Path | DeepConfig | dict[str, Any] = "small",
        device: str = "auto",
        random_state: int | np.random.RandomState | None = None,
        cache_dir: str | Path | None = None,
    ) -> None:
        self.config = config
        self.device = device
        self.random_state = random_state
        self.cache_dir = cache_dir

    # -- helpers ------------------------------------------------------------------------------
    def _patches(self, X: Any, config: DeepConfig) -> np.ndarray:
        if isinstance(X, pd.DataFrame):
            return lesion_patches(X, config.patch, cache_dir=self.cache_dir).patches
        patches = np.asarray(X, dtype=np.float32)
        if patches.ndim != 5:
            raise DataError(
                f"X must be a manifest DataFrame or patches of shape (n, c, d, h, w); "
                f"got an array of shape {patches.shape}"
            )
        return patches

    # -- sklearn API --------------------------------------------------------------------------
    def fit(self, X: Any, y: Any, groups: Any = None) -> LesionCNNClassifier:
        """Train with early stopping on a patient-grouped validation split; returns ``self``."""
        config = load_deep_config(self.config)
        self.classes_, target = _binary_target(y)
        if groups is None and isinstance(X, pd.DataFrame) and "patient_id" in X.columns:
            groups = X["patient_id"].to_numpy()
        if groups is None:
            warnings.warn(
                "LesionCNNClassifier.fit got no patient ids; each lesion is treated as its own "
                "patient for the early-stopping split (pass groups= to keep patients together)",
                UserWarning,
                stacklevel=2,
            )
            groups = np.arange(len(target))
        patches = self._patches(X, config)
        self.trained_: TrainedLesionCNN = train_lesion_cnn(
            patches,
            target,
            np.asarray(groups),
            config,
            device=self.device,
            random_state=check_random_state(self.random_state),
        )
        self.config_ = config
        self.history_ = self.trained_.history
        self.best_epoch_ = self.trained_.best_epoch
        return self

    def predict_proba(self, X: Any) -> np.ndarray:
        """``(n, 2)`` class probabilities; column 1 is ``classes_[1]`` (progressive disease)."""
        check_is_fitted(self, "trained_")
        p = self.trained_.predict(self._patches(X, self.config_))
        return np.column_stack([1.0 - p, p])

    def predict(self, X: Any) -> np.ndarray:
        """Class labels at a 0.5 probability threshold."""
        return self.classes_[(self.predict_proba(X)[:, 1] >= 0.5).astype(int)]

    # -- persistence --------------------------------------------------------------------------
    def save(self, path: str | Path) -> Path:
        """Checkpoint with weights and every preprocessing setting (see ``save_checkpoint``)."""
        check_is_fitted(self, "trained_")
        return save_checkpoint(self.trained_, path)

    @classmethod
    def load(cls, path: str | Path, device: str = "auto") -> LesionCNNClassifier:
        """A fitted classifier from a checkpoint (binary classes ``[0, 1]``)."""
        trained = load_checkpoint(path, device=device)
        model = cls(config=trained.config, device=device)
        model.trained_ = trained
        model.config_ = trained.config
        model.classes_ = np.array([0, 1])
        model.history_ = trained.history
        model.best_epoch_ = trained.best_epoch
        return model


def _logit(p: np.ndarray) -> np.ndarray:
    p = np.clip(np.asarray(p, dtype=float), 1e-6, 1 - 1e-6)
    return np.log(p / (1 - p))


def _default_radiomics() -> Any:
    from sklearn.impute import SimpleImputer
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    return make_pipeline(
        SimpleImputer(), StandardScaler(), LogisticRegression(C=0.1, max_iter=2000)
    )


class LateFusionClassifier(ClassifierMixin, BaseEstimator):
    """Stack a deep score, a radiomics score and clinical variables with a logistic model.

    The base models' scores that train the combiner are *out-of-fold* (patient-grouped inner
    cross-validation), so the combiner learns how much to trust each score on lesions the base
    model did not see; the base models are then refitted on all training lesions.

    Parameters
    ----------
    deep : estimator, optional
        Scores lesions from the DataFrame (default ``LesionCNNClassifier()``).
    radiomics : estimator, optional
        Fitted on ``feature_columns`` (default: impute + scale + L2 logistic regression).
    feature_columns : list of str, optional
        Radiomics columns; default every pyradiomics-named column (``original_...``, ...).
    clinical_columns : list of str, default=("pdl1", "arm")
        Numeric columns are imputed and scaled, text columns one-hot encoded.
    deep_score_column : str, optional
        Use this precomputed column as the deep score instead of training ``deep`` (to reuse
        out-of-fold CNN scores and avoid retraining the network ``cv + 1`` times).
    cv : int, default=3
        Inner patient-grouped folds for the out-of-fold base scores.
    random_state : int, RandomState or None
    """

    def __init__(
        self,
        deep: Any = None,
        radiomics: Any = None,
        feature_columns: list[str] | None = None,
        clinical_columns: tuple[str, ...] | list[str] = ("pdl1", "arm"),
        deep_score_column: str | None = None,
        cv: int = 3,
        random_state: int | np.random.RandomState | None = None,
    ) -> None:
        self.deep = deep
        self.radiomics = radiomics
        self.feature_columns = feature_columns
        self.clinical_columns = clinical_columns
        self.deep_score_column = deep_score_column
        self.cv = cv
        self.random_state = random_state

    def _features(self, X: pd.DataFrame) -> list[str]:
        if self.feature_columns is not None:
            return list(self.feature_columns)
        return [c for c in X.columns if str(c).startswith(_RADIOMICS_PREFIXES)]

    def _base_scores(self, X: pd.DataFrame, deep: Any, radiomics: Any) -> pd.DataFrame:
        out = pd.DataFrame(index=X.index)
        if self.deep_score_column is not None:
            out["deep"] = _logit(X[self.deep_score_column].to_numpy())
        elif deep is not None:
            out["deep"] = _logit(deep.predict_proba(X)[:, 1])
        if radiomics is not None:
            out["radiomics"] = _logit(radiomics.predict_proba(X[self.features_])[:, 1])
        for column in self.clinical_columns:
            out[column] = X[column].to_numpy()
        return out

    def fit(self, X: pd.DataFrame, y: Any) -> LateFusionClassifier:
        """Fit the base models out-of-fold, the combiner on their scores, then refit the bases."""
        from sklearn.compose import ColumnTransformer
        from sklearn.impute import SimpleImputer
        from sklearn.linear_model import LogisticRegression
        from sklearn.model_selection import StratifiedGroupKFold
        from sklearn.pipeline import make_pipeline
        from sklearn.preprocessing import OneHotEncoder, StandardScaler

        if not isinstance(X, pd.DataFrame) or "patient_id" not in X.columns:
            raise DataError("LateFusionClassifier needs a DataFrame with a patient_id column")
        self.classes_, target = _binary_target(y)
        rng = check_random_state(self.random_state)
        seed = int(rng.randint(0, 2**31 - 1))
        self.features_ = self._features(X)
        missing = [c for c in self.clinical_columns if c not in X.columns]
        if missing:
            raise DataError(f"clinical columns {missing} not in the fusion input")
        deep = None
        if self.deep_score_column is None:
            deep = self.deep if self.deep is not None else LesionCNNClassifier()
        radiomics = None
        if self.features_:
            radiomics = self.radiomics if self.radiomics is not None else _default_radiomics()

        oof = pd.DataFrame(index=X.index)
        splitter = StratifiedGroupKFold(n_splits=self.cv, shuffle=True, random_state=seed)
        oof_deep = np.zeros(len(X))
        oof_rad = np.zeros(len(X))
        for train, test in splitter.split(np.zeros(len(X)), target, X["patient_id"]):
            if deep is not None:
                fold = _with_seed(clone(deep), seed).fit(X.iloc[train], target[train])
                oof_deep[test] = fold.predict_proba(X.iloc[test])[:, 1]
            if radiomics is not None:
                fold = _with_seed(clone(radiomics), seed)
                fold.fit(X.iloc[train][self.features_], target[train])
                oof_rad[test] = fold.predict_proba(X.iloc[test][self.features_])[:, 1]
        if self.deep_score_column is not None:
            oof["deep"] = _logit(X[self.deep_score_column].to_numpy())
        elif deep is not None:
            oof["deep"] = _logit(oof_deep)
        if radiomics is not None:
            oof["radiomics"] = _logit(oof_rad)
        for column in self.clinical_columns:
            oof[column] = X[column].to_numpy()

        numeric = [c for c in oof.columns if pd.api.types.is_numeric_dtype(oof[c])]
        categorical = [c for c in oof.columns if c not in numeric]
        combiner = ColumnTransformer(
            [
                ("num", make_pipeline(SimpleImputer(), StandardScaler()), numeric),
                ("cat", OneHotEncoder(handle_unknown="ignore"), categorical),
            ]
        )
        self.final_ = make_pipeline(combiner, LogisticRegression(max_iter=2000))
        self.final_.fit(oof, target)
        self.deep_ = (
            _with_seed(clone(deep), seed).fit(X, target) if deep is not None else None
        )
        self.radiomics_ = (
            _with_seed(clone(radiomics), seed).fit(X[self.features_], target)
            if radiomics is not None
            else None
        )
        return self

    def predict_proba(self, X: pd.DataFrame) -> np.ndarray:
        check_is_fitted(self, "final_")
        return self.final_.predict_proba(self._base_scores(X, self.deep_, self.radiomics_))

    def predict(self, X: pd.DataFrame) -> np.ndarray:
        return self.classes_[(self.predict_proba(X)[:, 1] >= 0.5).astype(int)]


def _with_seed(estimator: Any, seed: int) -> Any:
    """Give an estimator (or pipeline step) that has no fixed seed a derived one."""
    params = estimator.get_params()
    updates = {k: seed for k, v in params.items() if k.endswith("random_state") and v is None}
    if updates:
        estimator.set_params(**updates)
    return estimator
