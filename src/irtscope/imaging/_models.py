"""Model pipelines: radiomics (+ clinical) random forest and random survival forest.

Each factory returns one unfitted scikit-learn :class:`~sklearn.pipeline.Pipeline` that takes
the *whole* feature frame (a DataFrame with radiomics columns, clinical columns, the batch
column and identifiers) and selects what it needs by column name. Keeping selection,
harmonisation, filtering, scaling and the forest in one object means cross-validation refits
every data-dependent step on training patients only, and external cohorts are transformed
with what the development cohort taught.

Column handling
---------------
- radiomics columns: [median imputation -> ComBat by ``batch_column`` (optional)] -> median
  imputation -> near-zero-variance filter -> correlation filter -> standard scaling (ComBat
  needs complete data, so with harmonisation missing values are imputed first, with the
  training median; without missing values that step changes nothing);
- clinical numeric columns (e.g. ``pdl1``, ``age``): median imputation;
- clinical categorical columns (e.g. ``arm``, ``sex``): constant ``"missing"`` imputation ->
  one-hot encoding that ignores categories unseen in training (an external cohort may use
  another arm label);
- everything else (``patient_id``, ``lesion_id``, outcomes) is dropped.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd
from sklearn.compose import ColumnTransformer, make_column_selector
from sklearn.ensemble import RandomForestClassifier
from sklearn.impute import SimpleImputer
from sklearn.model_selection import GridSearchCV
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import OneHotEncoder, StandardScaler

from irtscope._errors import ConfigError
from irtscope.imaging._evaluate import PatientStratifiedGroupKFold
from irtscope.imaging._preprocess import (
    ComBatHarmonizer,
    CorrelationFilter,
    NearZeroVarianceFilter,
)

__all__ = [
    "RADIOMICS_PREFIXES",
    "make_preprocessor",
    "make_radiomics_classifier",
    "make_survival_forest",
    "make_tuned",
    "radiomics_columns",
]

#: Prefixes of pyradiomics feature columns (image type then feature class).
RADIOMICS_PREFIXES = (
    "original_",
    "wavelet-",
    "log-sigma-",
    "square_",
    "squareroot_",
    "logarithm_",
    "exponential_",
    "gradient_",
    "lbp-2D_",
    "lbp-3D-",
)


def radiomics_columns(frame: pd.DataFrame) -> list[str]:
    """Numeric pyradiomics feature columns of ``frame`` (diagnostics excluded)."""
    return [
        str(c)
        for c in frame.columns
        if str(c).startswith(RADIOMICS_PREFIXES) and pd.api.types.is_numeric_dtype(frame[c])
    ]


def make_preprocessor(
    radiomics: Sequence[str] = (),
    clinical: Sequence[str] = (),
    harmonize: bool = False,
    batch_column: str = "cohort",
    correlation_threshold: float = 0.95,
) -> ColumnTransformer:
    """Column-wise preprocessing shared by the classifier and the survival forest.

    Parameters
    ----------
    radiomics : sequence of str
        Radiomics feature columns.
    clinical : sequence of str
        Clinical columns; numeric ones are imputed, others one-hot encoded.
    harmonize : bool, default=False
        Put :class:`ComBatHarmonizer` first in the radiomics branch, batches from
        ``batch_column`` (which must then be present in the input frame).
    batch_column : str, default="cohort"
    correlation_threshold : float, default=0.95
    """
    radiomics, clinical = list(radiomics), list(clinical)
    if not radiomics and not clinical:
        raise ConfigError("a model needs radiomics and/or clinical columns; both are empty")
    if batch_column in clinical:
        raise ConfigError(f"batch column {batch_column!r} cannot also be a clinical predictor")
    transformers: list[tuple[str, Any, Any]] = []
    if radiomics:
        steps: list[tuple[str, Any]] = []
        columns = list(radiomics)
        if harmonize:
            steps += [
                ("impute_before_combat", _impute_keeping_batch(radiomics)),
                ("combat", ComBatHarmonizer(batch_column=batch_column)),
            ]
            columns = [*radiomics, batch_column]
        steps += [
            ("impute", SimpleImputer(strategy="median")),
            ("near_zero_variance", NearZeroVarianceFilter()),
            ("correlation", CorrelationFilter(threshold=correlation_threshold)),
            ("scale", StandardScaler()),
        ]
        transformers.append(("radiomics", Pipeline(steps), columns))
    if clinical:
        categorical = Pipeline(
            [
                ("impute", SimpleImputer(strategy="constant", fill_value="missing")),
                ("onehot", OneHotEncoder(handle_unknown="ignore", sparse_output=False)),
            ]
        )
        clinical_block = ColumnTransformer(
            [
                (
                    "numeric",
                    SimpleImputer(strategy="median", keep_empty_features=True),
                    make_column_selector(dtype_include=np.number),
                ),
                ("categorical", categorical, make_column_selector(dtype_exclude=np.number)),
            ],
            sparse_threshold=0.0,
        )
        transformers.append(("clinical", clinical_block, clinical))
    return ColumnTransformer(transformers, remainder="drop", sparse_threshold=0.0)


def _impute_keeping_batch(radiomics: Sequence[str]) -> ColumnTransformer:
    """Median-impute the radiomics columns, pass the batch column through, keep a DataFrame.

    ComBat reads its batch column by name, so the output stays a DataFrame with the input's
    column names. A column with no observed value in a training fold is kept (as 0) rather
    than dropped, so every fold has the same columns; the variance filter removes it later.
    """
    return ColumnTransformer(
        [("median", SimpleImputer(strategy="median", keep_empty_features=True), list(radiomics))],
        remainder="passthrough",
        verbose_feature_names_out=False,
        sparse_threshold=0.0,
    ).set_output(transform="pandas")


def make_radiomics_classifier(
    radiomics: Sequence[str] = (),
    clinical: Sequence[str] = (),
    harmonize: bool = False,
    batch_column: str = "cohort",
    n_estimators: int = 300,
    min_samples_leaf: int = 1,
    max_features: str | float = "sqrt",
    class_weight: str | None = "balanced",
    correlation_threshold: float = 0.95,
    random_state: Any = None,
) -> Pipeline:
    """Random forest for per-lesion progressive disease (the study's radiomics model).

    ``class_weight="balanced"`` because progressive lesions are the minority; probabilities
    stay usable for ranking (AUC) though not calibrated (see the calibration plot).
    """
    return Pipeline(
        [
            (
                "preprocess",
                make_preprocessor(
                    radiomics, clinical, harmonize, batch_column, correlation_threshold
                ),
            ),
            (
                "model",
                RandomForestClassifier(
                    n_estimators=n_estimators,
                    min_samples_leaf=min_samples_leaf,
                    max_features=max_features,
                    class_weight=class_weight,
                    random_state=random_state,
                    n_jobs=1,
                ),
            ),
        ]
    )


def make_survival_forest(
    radiomics: Sequence[str] = (),
    clinical: Sequence[str] = (),
    harmonize: bool = False,
    batch_column: str = "cohort",
    n_estimators: int = 300,
    min_samples_leaf: int = 3,
    min_samples_split: int = 6,
    max_features: str | float = "sqrt",
    correlation_threshold: float = 0.95,
    random_state: Any = None,
) -> Pipeline:
    """scikit-survival ``RandomSurvivalForest`` for OS or PFS.

    Fit with a structured ``y`` from ``sksurv.util.Surv.from_arrays``; ``predict`` returns a
    risk score (higher = earlier event), and ``score`` is Harrell's C-index, so the pipeline
    plugs into ``GridSearchCV`` unchanged.
    """
    from sksurv.ensemble import RandomSurvivalForest

    return Pipeline(
        [
            (
                "preprocess",
                make_preprocessor(
                    radiomics, clinical, harmonize, batch_column, correlation_threshold
                ),
            ),
            (
                "model",
                RandomSurvivalForest(
                    n_estimators=n_estimators,
                    min_samples_leaf=min_samples_leaf,
                    min_samples_split=min_samples_split,
                    max_features=max_features,
                    random_state=random_state,
                    n_jobs=1,
                ),
            ),
        ]
    )


def make_tuned(
    pipeline: Pipeline,
    param_grid: dict[str, list[Any]] | None = None,
    scoring: str | None = None,
    inner_splits: int = 3,
    random_state: Any = None,
) -> GridSearchCV:
    """Wrap ``pipeline`` in a grid search whose inner folds also group by patient.

    Used inside :func:`~irtscope.imaging.grouped_cv_predict`, this gives nested CV: the outer
    folds estimate performance, the inner folds (within each outer training set) choose the
    hyper-parameters. ``fit`` must receive ``groups=`` (patient ids).

    Parameters
    ----------
    param_grid : dict, optional
        Default: a small grid over the forest's ``min_samples_leaf`` (the parameter that most
        controls over-fitting on small cohorts); two candidates keep nested CV affordable on
        a laptop (each candidate costs ``inner_splits`` fits per outer fold). Leaves stay small
        because development cohorts are small (76 patients in PEMBRO-RT, fewer per inner
        fold): a survival forest whose leaves cannot split predicts one constant risk.
    scoring : str, optional
        ``"roc_auc"`` for classifiers; ``None`` uses the estimator's ``score`` (C-index for
        the survival forest).
    """
    model = pipeline.named_steps["model"]
    is_classifier = isinstance(model, RandomForestClassifier)
    if param_grid is None:
        param_grid = (
            {"model__min_samples_leaf": [1, 5]}
            if is_classifier
            else {"model__min_samples_leaf": [2, 6]}
        )
    if scoring is None and is_classifier:
        scoring = "roc_auc"
    cv = PatientStratifiedGroupKFold(n_splits=inner_splits, shuffle=True, random_state=random_state)
    return GridSearchCV(pipeline, param_grid, scoring=scoring, cv=cv, refit=True, n_jobs=1,
                        error_score="raise")
