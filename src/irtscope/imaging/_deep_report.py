"""Deep-vs-radiomics study: train, validate, compare on the same lesions, and report.

:func:`run_deep_study` trains the lesion CNN on the development cohort with the *same*
patient-grouped folds as the radiomics forest (``grouped_splits`` with one seed), refits both on
the whole development cohort, scores every external cohort, and compares the two models on the
lesions both could score: AUC with a patient-clustered bootstrap CI per model, and a paired
DeLong test. :func:`build_deep_section` turns the result into a section for the imaging report.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from markupsafe import Markup

from irtscope._console import ProgressCallback
from irtscope._errors import DataError
from irtscope.imaging._deep import DeepConfig, load_deep_config
from irtscope.imaging._deep_estimator import LateFusionClassifier, LesionCNNClassifier
from irtscope.imaging._patches import lesion_patches

__all__ = [
    "DeepStudyResult",
    "build_deep_section",
    "comparison_table",
    "deep_section_from_outputs",
    "demo_section",
    "format_comparison",
    "run_deep_study",
    "write_deep_outputs",
]

INTERNAL = "internal (grouped CV)"
EXTERNAL = "external"
_MODELS = ("radiomics", "deep", "fusion")


@dataclass
class DeepStudyResult:
    """Everything the deep section and the CLI need; ``scores`` has one row per lesion."""

    config: DeepConfig
    model: LesionCNNClassifier
    scores: pd.DataFrame
    comparison: pd.DataFrame
    timings: dict[str, float]
    failures: pd.DataFrame
    simulated: bool
    dev_cohort: str
    saliency: list[dict[str, Any]] = field(default_factory=list)
    settings: dict[str, Any] = field(default_factory=dict)


def _fmt_ci(auc: float, lo: float, hi: float) -> str:
    if not np.isfinite(auc):
        return "n/a"
    return f"{auc:.2f} ({lo:.2f}–{hi:.2f})"


def _fmt_p(p: float) -> str:
    if not np.isfinite(p):
        return "n/a"
    return "<0.001" if p < 0.001 else f"{p:.3f}"


def comparison_table(
    scores: pd.DataFrame, n_boot: int = 1000, random_state: int | None = 0
) -> pd.DataFrame:
    """AUC (95% patient-clustered bootstrap CI) per model and cohort, DeLong deep vs radiomics.

    Parameters
    ----------
    scores : pandas.DataFrame
        ``cohort``, ``evaluation``, ``patient_id``, ``pd`` and one score column per model
        (``radiomics``, ``deep``, optional ``fusion``); rows with a missing score are dropped
        per comparison so both models are always compared on identical lesions.
    """
    from irtscope.imaging._evaluate import auc_ci, delong_test

    models = [m for m in _MODELS if m in scores.columns]
    rows = []
    for (cohort, evaluation), part in scores.groupby(["cohort", "evaluation"], sort=False):
        part = part.dropna(subset=models)
        y = part["pd"].to_numpy().astype(int)
        row: dict[str, Any] = {
            "cohort": cohort,
            "evaluation": evaluation,
            "lesions": len(part),
            "patients": part["patient_id"].nunique(),
            "pd_lesions": int(y.sum()),
        }
        both = len(np.unique(y)) == 2
        for model in models:
            if both:
                auc, lo, hi = auc_ci(
                    y, part[model], part["patient_id"], n_boot=n_boot, random_state=random_state
                )
            else:
                auc = lo = hi = float("nan")
            row.update({f"{model}_auc": auc, f"{model}_lo": lo, f"{model}_hi": hi})
        for other in ("radiomics", "fusion"):
            if other == "fusion" and "fusion" not in models:
                continue
            ref, new = ("radiomics", "deep") if other == "radiomics" else ("radiomics", "fusion")
            if ref in models and both:
                z, p = delong_test(y, part[new], part[ref])
            else:
                z = p = float("nan")
            row[f"delong_z_{new}_vs_{ref}"] = z
            row[f"delong_p_{new}_vs_{ref}"] = p
        rows.append(row)
    return pd.DataFrame(rows)


def format_comparison(comparison: pd.DataFrame) -> pd.DataFrame:
    """Reader-facing version of :func:`comparison_table`: "AUC (lo–hi)" strings, p to 3 dp."""
    out = comparison[["cohort", "evaluation", "lesions", "patients", "pd_lesions"]].copy()
    out.columns = ["Cohort", "Evaluation", "Lesions", "Patients", "PD lesions"]
    for model in _MODELS:
        if f"{model}_auc" in comparison.columns:
            out[f"{model.capitalize()} AUC (95% CI)"] = [
                _fmt_ci(a, lo, hi)
                for a, lo, hi in zip(
                    comparison[f"{model}_auc"],
                    comparison[f"{model}_lo"],
                    comparison[f"{model}_hi"],
                    strict=True,
                )
            ]
    for column, label in (
        ("delong_p_deep_vs_radiomics", "DeLong p (deep vs radiomics)"),
        ("delong_p_fusion_vs_radiomics", "DeLong p (fusion vs radiomics)"),
    ):
        if column in comparison.columns:
            out[label] = [_fmt_p(p) for p in comparison[column]]
    return out


def _radiomics_frame(manifest: pd.DataFrame, features: pd.DataFrame) -> pd.DataFrame:
    if "lesion_id" not in features.columns:
        raise DataError("features table has no lesion_id column (expected features.parquet)")
    keep = [c for c in features.columns if c not in ("patient_id", "cohort")]
    return manifest.merge(features[keep], on="lesion_id", how="inner", validate="one_to_one")


#: inner folds of the radiomics forest's leaf-size tuning (as in ``imaging evaluate``)
_INNER_SPLITS = 3


def _fit_predict_cnn(
    estimator: LesionCNNClassifier,
    patches: np.ndarray,
    y: np.ndarray,
    groups: np.ndarray,
    train: np.ndarray,
    predict: np.ndarray,
) -> np.ndarray:
    """Fit a fresh copy of ``estimator`` on rows ``train``; PD probability of rows ``predict``."""
    model = LesionCNNClassifier(**estimator.get_params())
    model.fit(patches[train], y[train], groups=groups[train])
    return model.predict_proba(patches[predict])[:, 1]


def _nested_fusion_oof(
    stack: LateFusionClassifier,
    rad_dev: pd.DataFrame,
    y: np.ndarray,
    dev_ids: np.ndarray,
    splits: list[tuple[np.ndarray, np.ndarray]],
    fit_predict: Any,
    progress: ProgressCallback | None = None,
) -> dict[str, float]:
    """Out-of-fold late-fusion scores of the development lesions, without a leak.

    The combiner of outer fold ``k`` is trained on deep scores of its training lesions. Reusing
    the outer-CV CNN scores there would leak: the score of a training lesion in fold ``j``
    comes from the CNN trained on every fold but ``j``, *including the test fold k*, so the
    test patients' labels would shape the combiner that scores them. Here the training
    lesions of fold ``j`` get the score of a CNN trained on the folds other than ``j`` and
    ``k`` (one CNN per pair of folds, shared by the two outer folds it serves), and the test
    lesions keep their outer-CV score (from the CNN trained without fold ``k``).

    Parameters
    ----------
    rad_dev : DataFrame
        Development lesions with features, ``lesion_id``, ``patient_id`` and a ``deep_score``
        column holding the outer-CV (out-of-fold) CNN scores.
    dev_ids : ndarray of str
        Lesion id of every row that ``splits`` and ``fit_predict`` index.
    splits : list of (train, test)
        The outer patient-grouped folds of the CNN, as row indices into ``dev_ids``.
    fit_predict : callable
        ``fit_predict(train_rows, predict_rows) -> scores`` trains a fresh CNN.

    Returns
    -------
    dict
        Lesion id -> fused out-of-fold PD probability.
    """
    from sklearn.base import clone

    n_folds = len(splits)
    if n_folds < 3:
        raise DataError(
            f"late fusion needs at least 3 cross-validation folds to train its combiner on CNN "
            f"scores from models that never saw the test fold (got {n_folds}); raise n_splits "
            "or turn fusion off"
        )
    fold_of = np.full(len(dev_ids), -1)
    for k, (_, test) in enumerate(splits):
        fold_of[test] = k
    row_of = {lesion: i for i, lesion in enumerate(dev_ids)}
    rows = np.array([row_of[str(lesion)] for lesion in rad_dev["lesion_id"]])
    folds = fold_of[rows]
    pair_scores = np.full((n_folds, n_folds, len(dev_ids)), np.nan)
    for j in range(n_folds):
        for k in range(j + 1, n_folds):
            predict = np.flatnonzero((fold_of == j) | (fold_of == k))
            train = np.flatnonzero((fold_of != j) & (fold_of != k))
            try:
                scores = fit_predict(train, predict)
            except DataError as exc:
                raise DataError(
                    f"late fusion: the CNN trained without folds {j + 1} and {k + 1} could not "
                    f"be fitted ({exc}); use more patients or turn fusion off"
                ) from exc
            pair_scores[j, k, predict] = pair_scores[k, j, predict] = scores
            if progress is not None:
                progress(1, None, "CNN for nested late fusion")
    fused: dict[str, float] = {}
    for k in range(n_folds):
        test, train = folds == k, folds != k
        inner = pair_scores[folds[train], k, rows[train]]
        model = clone(stack).fit(rad_dev[train].assign(deep_score=inner), y[train])
        scores = model.predict_proba(rad_dev[test])[:, 1]
        fused.update(zip(rad_dev["lesion_id"].to_numpy()[test], scores, strict=True))
    return fused


def run_deep_study(
    manifest: pd.DataFrame,
    features: pd.DataFrame | None = None,
    config: str | Path | DeepConfig | dict[str, Any] = "small",
    *,
    dev_cohort: str = "DEV-SIM",
    label: str = "pd",
    device: str = "auto",
    random_state: int = 0,
    n_splits: int = 5,
    n_boot: int = 1000,
    cache_dir: str | Path | None = None,
    fusion: bool = True,
    clinical_columns: tuple[str, ...] = ("pdl1", "arm"),
    n_saliency: int = 4,
    progress: ProgressCallback | None = None,
) -> DeepStudyResult:
    """Train and validate the lesion CNN and compare it with radiomics on the same lesions.

    Parameters
    ----------
    manifest : pandas.DataFrame
        Validated lesion manifest (``load_manifest``) with the per-lesion label column.
    features : pandas.DataFrame, optional
        ``features.parquet`` from ``extract_features``; without it only the deep model runs.
    config : preset name, YAML path, dict or DeepConfig
    dev_cohort : str
        Development cohort (grouped CV + final fit); every other cohort is external.
    random_state : int
        Seeds the shared folds, the bootstrap and every model.
    n_splits, n_boot : int
        Grouped CV folds; bootstrap replicates for the CIs.
    fusion : bool
        Also evaluate late fusion (deep score + radiomics + clinical), when features exist.
    n_saliency : int
        External lesions (or development ones without externals) to draw Grad-CAM maps for.
    progress : callable, optional
        Advanced once per lesion patch and once per CNN fit.
    """
    from irtscope.imaging._evaluate import grouped_cv_predict, grouped_splits
    from irtscope.imaging._models import (
        make_radiomics_classifier,
        make_tuned,
        radiomics_columns,
    )
    from irtscope.imaging._saliency import saliency_maps, select_saliency_lesions

    cfg = load_deep_config(config)
    if label not in manifest.columns:
        raise DataError(f"manifest has no {label!r} column (per-lesion label to predict)")
    labelled = manifest[manifest[label].notna()].reset_index(drop=True)
    if dev_cohort not in set(labelled["cohort"]):
        found = sorted(set(labelled["cohort"]))
        raise DataError(f"development cohort {dev_cohort!r} not in the manifest (found {found})")
    timings: dict[str, float] = {}

    started = time.perf_counter()
    step = progress
    if progress is not None:
        # one bar for the whole study: every patch, every CNN fit (grouped CV, final fit and,
        # for nested late fusion, one per pair of folds)
        n_fits = n_splits + 1
        if fusion and features is not None:
            n_fits += n_splits * (n_splits - 1) // 2
        progress(0, len(labelled) + n_fits, "patches")

        def step(advance: int, total: int | None = None, description: str = "") -> None:
            progress(advance, None, description)

    patch_set = lesion_patches(
        labelled, cfg.patch, cache_dir=cache_dir, progress=step, raise_on_error=False
    )
    timings["patches_s"] = time.perf_counter() - started
    ok = labelled["lesion_id"].astype(str).isin(patch_set.lesion_ids).to_numpy()
    frame = labelled[ok].reset_index(drop=True)
    patches = patch_set.patches
    y_all = frame[label].to_numpy().astype(int)
    groups_all = frame["patient_id"].to_numpy()
    is_dev = (frame["cohort"] == dev_cohort).to_numpy()
    dev_idx, ext_idx = np.flatnonzero(is_dev), np.flatnonzero(~is_dev)
    y_dev, g_dev = y_all[dev_idx], groups_all[dev_idx]

    splits = grouped_splits(y_dev, g_dev, n_splits, random_state)
    estimator = LesionCNNClassifier(config=cfg, device=device, random_state=random_state)
    deep = np.full(len(frame), np.nan)
    fold_seconds = []
    for train, test in splits:
        fold = LesionCNNClassifier(**estimator.get_params())
        tic = time.perf_counter()
        fold.fit(patches[dev_idx[train]], y_dev[train], groups=g_dev[train])
        fold_seconds.append(time.perf_counter() - tic)
        deep[dev_idx[test]] = fold.predict_proba(patches[dev_idx[test]])[:, 1]
        if progress is not None:
            progress(1, None, "CNN grouped CV")
    timings["cv_fit_mean_s"] = float(np.mean(fold_seconds))
    tic = time.perf_counter()
    final = LesionCNNClassifier(**estimator.get_params()).fit(
        patches[dev_idx], y_dev, groups=g_dev
    )
    timings["final_fit_s"] = time.perf_counter() - tic
    epochs = final.history_
    timings["epoch_mean_s"] = float(np.mean([h["seconds"] for h in epochs])) if epochs else 0.0
    timings["epochs_run"] = float(len(epochs))
    if len(ext_idx):
        tic = time.perf_counter()
        deep[ext_idx] = final.predict_proba(patches[ext_idx])[:, 1]
        timings["inference_lesions_per_s"] = len(ext_idx) / max(time.perf_counter() - tic, 1e-9)
    if progress is not None:
        progress(1, None, "CNN final fit")

    scores = frame[["lesion_id", "patient_id", "cohort"]].copy()
    scores["pd"] = y_all
    scores["evaluation"] = np.where(is_dev, INTERNAL, EXTERNAL)
    scores["deep"] = deep

    if features is not None:
        rad = _radiomics_frame(frame, features)
        columns = radiomics_columns(rad)
        if not columns:
            raise DataError("features table has no pyradiomics feature columns")
        rad_dev = rad[rad["cohort"] == dev_cohort].reset_index(drop=True)
        rad_ext = rad[rad["cohort"] != dev_cohort].reset_index(drop=True)
        # The same radiomics model as ``irtscope imaging evaluate``: the forest with its
        # leaf size tuned by patient-grouped inner folds (nested CV), so both reports agree.
        # Tuning needs both classes in every inner fold; a tiny cohort keeps the plain forest.
        model = make_radiomics_classifier(radiomics=columns, random_state=random_state)
        y_patient = rad_dev.groupby("patient_id")[label].max()
        if min(int(y_patient.sum()), int((y_patient == 0).sum())) >= 2 * _INNER_SPLITS:
            model = make_tuned(model, inner_splits=_INNER_SPLITS, random_state=random_state)
        tic = time.perf_counter()
        # the same grouped_splits(y, groups, n_splits, random_state) as the CNN folds above
        oof = grouped_cv_predict(
            model, rad_dev, rad_dev[label].to_numpy().astype(int), rad_dev["patient_id"],
            n_splits=n_splits, random_state=random_state,
        )
        values = dict(zip(rad_dev["lesion_id"], oof, strict=True))
        if len(rad_ext):
            fit_params = {"groups": rad_dev["patient_id"]} if hasattr(model, "cv") else {}
            model.fit(rad_dev, rad_dev[label].to_numpy().astype(int), **fit_params)
            values.update(
                zip(rad_ext["lesion_id"], model.predict_proba(rad_ext)[:, 1], strict=True)
            )
        timings["radiomics_s"] = time.perf_counter() - tic
        scores["radiomics"] = scores["lesion_id"].map(values)

        clinical = tuple(c for c in clinical_columns if c in rad.columns)
        if fusion:
            deep_map = dict(zip(scores["lesion_id"], scores["deep"], strict=True))
            rad = rad.assign(deep_score=rad["lesion_id"].map(deep_map))
            rad_dev = rad[rad["cohort"] == dev_cohort].reset_index(drop=True)
            rad_ext = rad[rad["cohort"] != dev_cohort].reset_index(drop=True)
            stack = LateFusionClassifier(
                radiomics=make_radiomics_classifier(radiomics=columns, random_state=random_state),
                feature_columns=columns,
                clinical_columns=clinical,
                deep_score_column="deep_score",
                cv=3,
                random_state=random_state,
            )
            y_rd = rad_dev[label].to_numpy().astype(int)
            tic = time.perf_counter()
            fused = _nested_fusion_oof(
                stack, rad_dev, y_rd, frame["lesion_id"].iloc[dev_idx].astype(str).to_numpy(),
                splits, lambda train, test: _fit_predict_cnn(
                    estimator, patches[dev_idx], y_dev, g_dev, train, test
                ), progress,
            )
            timings["fusion_nested_s"] = time.perf_counter() - tic
            if len(rad_ext):
                stack.fit(rad_dev, y_rd)
                fused.update(
                    zip(rad_ext["lesion_id"], stack.predict_proba(rad_ext)[:, 1], strict=True)
                )
            scores["fusion"] = scores["lesion_id"].map(fused)

    comparison = comparison_table(scores, n_boot=n_boot, random_state=random_state)

    saliency: list[dict[str, Any]] = []
    if n_saliency > 0:
        pool = ext_idx if len(ext_idx) else dev_idx
        chosen = [pool[i] for i in select_saliency_lesions(y_all[pool], deep[pool], n_saliency)]
        if chosen:
            maps = saliency_maps(final.trained_, patches[chosen])
            for k, index in enumerate(chosen):
                saliency.append(
                    {
                        "lesion_id": str(frame["lesion_id"].iloc[index]),
                        "cohort": str(frame["cohort"].iloc[index]),
                        "pd": int(y_all[index]),
                        "score": float(deep[index]),
                        "patch": patches[index],
                        "map": maps[k],
                    }
                )

    # any simulated lesion makes the whole study simulated (a mixed study must say so too)
    simulated = bool("simulated" in frame.columns and frame["simulated"].fillna(False).any())
    return DeepStudyResult(
        config=cfg,
        model=final,
        scores=scores,
        comparison=comparison,
        timings=timings,
        failures=patch_set.failures,
        simulated=simulated,
        dev_cohort=dev_cohort,
        saliency=saliency,
        settings={
            "random_state": random_state,
            "n_splits": n_splits,
            "n_boot": n_boot,
            "device": final.trained_.device,
            "fusion": bool(fusion and features is not None),
            "clinical_columns": list(clinical_columns),
            "label": label,
        },
    )


_SECTION_TEMPLATE = """
{% if simulated %}<p class="simulated">SIMULATED DATA: every lesion in this section comes from
the irtscope simulator; these numbers say nothing about real patients.</p>{% endif %}
<p>3D CNN ({{ architecture }}) on {{ size }}<sup>3</sup> lesion-centred patches at
{{ spacing }} mm isotropic (HU window {{ hu_min }} to {{ hu_max }}{% if mask %}, mask as a
second channel{% endif %}; outside the scan the patch is filled with {{ pad }}), trained on
{{ dev }} with early stopping on a patient-grouped validation split. Internal AUCs are
out-of-fold from {{ n_splits }}-fold patient-grouped CV using the <em>same folds</em> for
every model; external AUCs come from models refitted on all of {{ dev }}. 95% CIs:
patient-clustered bootstrap ({{ n_boot }} replicates). DeLong tests are paired on identical
lesions and treat lesions as independent (p is somewhat optimistic).
{% if fusion %}Late fusion (a logistic model on the CNN score, the radiomics forest's score
and {{ clinical }}) is nested: in each outer fold its combiner learns from CNN scores of
networks that never saw that fold's patients (one extra network per pair of folds).{% endif %}
</p>
<table>
<thead><tr>{% for c in table.columns %}<th>{{ c }}</th>{% endfor %}</tr></thead>
<tbody>{% for row in table.itertuples(index=False) %}<tr>{% for v in row %}
<td>{{ v }}</td>{% endfor %}</tr>{% endfor %}</tbody>
</table>
<p class="meta">Training: {{ epochs }} epochs run (best {{ best_epoch }}),
{{ "%.1f"|format(epoch_s) }} s per epoch, final fit {{ "%.1f"|format(final_s) }} s on
{{ device }}.{% if failures %} {{ failures }} lesion(s) had no patch and were left out.{% endif %}
</p>
"""


def build_deep_section(
    result: DeepStudyResult, figures: list[dict[str, Any]] | None = None
) -> dict[str, Any]:
    """The imaging report's deep-learning section: ``{"title", "html", "figures"}``.

    ``figures`` are dicts with ``files`` (:class:`~irtscope.report.FigureFiles`) and
    ``caption``, passed through in the section's ``figures`` (the format
    ``write_imaging_report(extra_sections=...)`` accepts); the report embeds them.
    """
    return _section(
        comparison=result.comparison,
        config=result.config,
        settings=result.settings,
        timings=result.timings,
        best_epoch=result.model.best_epoch_,
        n_failures=len(result.failures),
        simulated=result.simulated,
        dev_cohort=result.dev_cohort,
        figures=figures or [],
    )


def deep_section_from_outputs(out_dir: str | Path) -> dict[str, Any]:
    """Rebuild the section from what :func:`write_deep_outputs` wrote (no retraining).

    Lets the imaging report include a ``train-deep`` run's results by pointing at its folder.
    """
    import base64

    from irtscope.report import FigureFiles

    out = Path(out_dir)
    summary_path = out / "deep_summary.json"
    if not summary_path.is_file():
        raise DataError(f"{out}: no deep_summary.json; run `irtscope imaging train-deep` first")
    summary = json.loads(summary_path.read_text(encoding="utf-8"))
    figures = []
    png = out / "deep_saliency.png"
    if png.is_file():
        uri = "data:image/png;base64," + base64.b64encode(png.read_bytes()).decode("ascii")
        files = FigureFiles(png=png, svg=out / "deep_saliency.svg", data_uri=uri)
        figures.append({"files": files, "caption": summary.get("saliency_caption", "")})
    return _section(
        comparison=pd.DataFrame(summary["comparison"]),
        config=load_deep_config(summary["config"]),
        settings=summary["settings"],
        timings=summary["timings"],
        best_epoch=int(summary["best_epoch"]),
        n_failures=len(summary["failures"]),
        simulated=bool(summary["simulated"]),
        dev_cohort=str(summary["dev_cohort"]),
        figures=figures,
    )


def _section(
    *,
    comparison: pd.DataFrame,
    config: DeepConfig,
    settings: dict[str, Any],
    timings: dict[str, float],
    best_epoch: int,
    n_failures: int,
    simulated: bool,
    dev_cohort: str,
    figures: list[dict[str, Any]],
) -> dict[str, Any]:
    from irtscope.report import render_template_string

    html = render_template_string(
        _SECTION_TEMPLATE,
        {
            "simulated": simulated,
            "architecture": config.architecture,
            "size": config.patch.size,
            "spacing": config.patch.spacing_mm,
            "hu_min": config.patch.hu_min,
            "hu_max": config.patch.hu_max,
            "mask": config.patch.include_mask,
            "pad": "the nearest scan voxel (edge padding)"
            if config.patch.pad == "edge"
            else "air",
            "dev": dev_cohort,
            "n_splits": settings.get("n_splits"),
            "n_boot": settings.get("n_boot"),
            "table": format_comparison(comparison),
            "epochs": int(timings.get("epochs_run", 0)),
            "best_epoch": best_epoch,
            "epoch_s": timings.get("epoch_mean_s", 0.0),
            "final_s": timings.get("final_fit_s", 0.0),
            "device": settings.get("device", "cpu"),
            "failures": n_failures,
            "fusion": bool(settings.get("fusion")),
            "clinical": ", ".join(settings.get("clinical_columns") or []) or "no clinical column",
        },
    )
    title = "Deep learning vs radiomics (per-lesion progressive disease)"
    return {
        "title": f"{title} (SIMULATED)" if simulated else title,
        "html": Markup(html),
        "figures": [{"files": f["files"], "caption": f["caption"]} for f in figures],
    }


def write_deep_outputs(result: DeepStudyResult, out_dir: str | Path) -> dict[str, Path]:
    """Write checkpoint, per-lesion scores, comparison table, saliency figure, section, summary.

    Returns the written paths by name (``checkpoint``, ``scores``, ``comparison``,
    ``saliency``, ``section``, ``summary``).
    """
    from irtscope.imaging._saliency import saliency_figure
    from irtscope.report import render_template_string, save_figure, write_csv, write_table

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths: dict[str, Path] = {"checkpoint": result.model.save(out / "lesion_cnn.pt")}
    data = "SIMULATED" if result.simulated else "real"
    paths["scores"] = out / "deep_scores.csv"
    write_csv(result.scores.assign(data=data), paths["scores"], index=False)
    paths["comparison"] = write_table(
        result.comparison.assign(data=data), out, "deep_vs_radiomics"
    ).csv
    write_table(
        format_comparison(result.comparison).assign(data=data), out, "deep_vs_radiomics_display"
    )
    figures = []
    caption = ""
    if result.saliency:
        fig = saliency_figure(
            np.stack([s["patch"] for s in result.saliency]),
            np.stack([s["map"] for s in result.saliency]),
            [f"{s['lesion_id']}\nPD={s['pd']} p={s['score']:.2f}" for s in result.saliency],
            result.config.patch.spacing_mm,
            suptitle="Grad-CAM, SIMULATED data" if result.simulated else "Grad-CAM",
        )
        files = save_figure(fig, out, "deep_saliency")
        paths["saliency"] = files.png
        caption = (
            ("SIMULATED data. " if result.simulated else "")
            + "Grad-CAM of the final CNN for the most confident correct progressive (PD=1) and "
            "non-progressive (PD=0) lesions; cyan: lesion mask. Where a patch overhangs the "
            "scan (near the first/last slice or the edge of a cropped volume) the nearest scan "
            "voxel is repeated (edge padding), so smeared stripes there are padding, not anatomy."
        )
        figures.append({"files": files, "caption": caption})
    section = build_deep_section(result, figures)
    page = render_template_string(
        '{% extends "base.html.j2" %}{% block body %}<h1>{{ title }}</h1>{{ html }}'
        '{% for f in figures %}<figure><img src="{{ f.files.data_uri }}" alt="{{ f.caption }}">'
        "<figcaption>{{ f.caption }}</figcaption></figure>{% endfor %}{% endblock %}",
        section,
    )
    paths["section"] = out / "deep_section.html"
    paths["section"].write_text(page, encoding="utf-8")
    import irtscope

    summary = {
        "irtscope_version": irtscope.__version__,
        "simulated": result.simulated,
        "dev_cohort": result.dev_cohort,
        "config": result.config.model_dump(mode="json"),
        "settings": result.settings,
        "timings": result.timings,
        "history": result.model.history_,
        "best_epoch": result.model.best_epoch_,
        "failures": result.failures.to_dict(orient="records"),
        "comparison": json.loads(result.comparison.to_json(orient="records")),
        "saliency_caption": caption,
    }
    paths["summary"] = out / "deep_summary.json"
    paths["summary"].write_text(json.dumps(summary, indent=2), encoding="utf-8")
    return paths


def demo_section(
    manifest_path: str | Path,
    features_path: str | Path,
    out_dir: str | Path,
    seed: int = 0,
    config: str | Path | DeepConfig = "small",
    n_boot: int = 300,
) -> dict[str, Any]:
    """Hook for ``irtscope imaging demo``: run the small CNN study and return its section.

    Trains on the demo's (simulated) development cohort, scores its external cohorts, writes
    everything :func:`write_deep_outputs` writes under ``out_dir`` and returns the section
    for ``write_imaging_report(extra_sections=[...])``.
    """
    from irtscope.imaging._manifest import load_manifest

    out = Path(out_dir)
    result = run_deep_study(
        load_manifest(manifest_path),
        pd.read_parquet(features_path),
        config,
        random_state=seed,
        n_boot=n_boot,
        cache_dir=out / "patch_cache",
    )
    write_deep_outputs(result, out)
    return deep_section_from_outputs(out)
