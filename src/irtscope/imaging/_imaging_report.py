"""Imaging report: metrics CSV, internal-vs-external table, ROC, calibration and KM figures.

The HTML is self-contained (figures embedded as data URIs, also saved as PNG/SVG) and rendered
with the shared autoescaping templates of :mod:`irtscope.report`. Results computed on
simulated cohorts carry a SIMULATED banner, a ``data`` column in every table and "SIMULATED" in
every figure title, so they cannot be mistaken for trial results.

Extra sections
--------------
Other models (e.g. the 3D CNN) add their results through
``extra_sections``: a list of dicts with ``title`` (str), ``html`` (a
:class:`markupsafe.Markup` fragment, rendered by the caller from an autoescaped template such
as :func:`irtscope.report.render_template_string`) and optional ``figures`` (a list of dicts
with ``caption`` and either ``src``, a data URI or a path relative to the report, or
``files``, a :class:`irtscope.report.FigureFiles`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from markupsafe import Markup

from irtscope import __version__
from irtscope._errors import DataError
from irtscope.imaging._validation import ValidationResult
from irtscope.report import render_html, save_figure, write_csv, write_table

__all__ = ["ImagingReportFiles", "internal_external_summary", "write_imaging_report"]

_TEMPLATES = Path(__file__).parent / "templates"


@dataclass(frozen=True)
class ImagingReportFiles:
    """Where the report and its tables went."""

    html: Path
    metrics_csv: Path
    summary_csv: Path
    predictions_csv: Path


def _fmt(estimate: float, lower: float, upper: float) -> str:
    if not np.isfinite(estimate):
        return "n/a"
    if not (np.isfinite(lower) and np.isfinite(upper)):
        return f"{estimate:.2f}"
    return f"{estimate:.2f} ({lower:.2f}-{upper:.2f})"


def internal_external_summary(table: pd.DataFrame) -> pd.DataFrame:
    """Wide table: one row per task/model/harmonisation, one column per validation setting.

    Cells read "estimate (95% CI)", AUC for per-lesion PD and Harrell's C-index for survival.
    """
    if table.empty:
        return pd.DataFrame()
    work = table.copy()
    work["column"] = np.where(
        work["setting"] == "external", "external " + work["cohort"].astype(str),
        work["setting"] + " " + work["cohort"].astype(str),
    )
    work["cell"] = [
        _fmt(e, lo, hi) for e, lo, hi in zip(
            work["estimate"], work["ci_lower"], work["ci_upper"], strict=True
        )
    ]
    index = ["task", "model", "harmonisation", "metric"]
    order = list(dict.fromkeys(work["column"]))
    wide = work.pivot_table(index=index, columns="column", values="cell", aggfunc="first",
                            sort=False)
    wide = wide.reindex(columns=order).reset_index()
    wide.columns.name = None
    if "simulated" in table.columns:
        wide.insert(0, "data", "SIMULATED" if bool(table["simulated"].any()) else "real")
    return wide


def _title(text: str, simulated: bool) -> str:
    return f"{text} (SIMULATED)" if simulated else text


def _caption(text: str, simulated: bool) -> str:
    """Figure captions travel without the page banner (copied into slides), so say it here."""
    return f"SIMULATED data. {text}" if simulated else text


def _roc_figure(preds: pd.DataFrame, simulated: bool) -> Any:
    from matplotlib.figure import Figure
    from sklearn.metrics import roc_curve

    harms = list(dict.fromkeys(preds["harmonisation"]))
    fig = Figure(figsize=(5.2 * len(harms), 4.6))
    axes = fig.subplots(1, len(harms), squeeze=False)[0]
    for ax, harm in zip(axes, harms, strict=True):
        part = preds[preds["harmonisation"] == harm]
        for (setting, cohort), group in part.groupby(["setting", "cohort"], sort=False):
            if group["y"].nunique() < 2:
                continue
            fpr, tpr, _ = roc_curve(group["y"], group["score"])
            label = f"{'internal CV' if setting != 'external' else 'external'} {cohort}"
            ax.plot(fpr, tpr, label=label, linestyle="-" if setting != "external" else "--")
        ax.plot([0, 1], [0, 1], color="grey", linewidth=0.8)
        ax.set(xlabel="1 - specificity", ylabel="sensitivity",
               title=_title(f"Per-lesion PD ROC, harmonisation {harm}", simulated))
        ax.legend(loc="lower right", fontsize=8)
    fig.tight_layout()
    return fig


def _calibration_figure(preds: pd.DataFrame, simulated: bool) -> Any:
    from matplotlib.figure import Figure
    from sklearn.calibration import calibration_curve

    harms = list(dict.fromkeys(preds["harmonisation"]))
    fig = Figure(figsize=(5.2 * len(harms), 4.6))
    axes = fig.subplots(1, len(harms), squeeze=False)[0]
    for ax, harm in zip(axes, harms, strict=True):
        part = preds[preds["harmonisation"] == harm]
        for (setting, cohort), group in part.groupby(["setting", "cohort"], sort=False):
            if group["y"].nunique() < 2:
                continue
            n_bins = int(min(8, max(3, len(group) // 15)))
            observed, predicted = calibration_curve(
                group["y"], np.clip(group["score"], 0, 1), n_bins=n_bins, strategy="quantile"
            )
            label = f"{'internal CV' if setting != 'external' else 'external'} {cohort}"
            ax.plot(predicted, observed, marker="o", label=label)
        ax.plot([0, 1], [0, 1], color="grey", linewidth=0.8)
        ax.set(xlim=(0, 1), ylim=(0, 1), xlabel="predicted probability of PD",
               ylabel="observed PD fraction",
               title=_title(f"Calibration, harmonisation {harm}", simulated))
        ax.legend(loc="upper left", fontsize=8)
    fig.tight_layout()
    return fig


def _km_figure(preds: pd.DataFrame, task: str, simulated: bool) -> Any:
    from matplotlib.figure import Figure

    from irtscope.imaging._evaluate import km_by_risk_group

    harms = list(dict.fromkeys(preds["harmonisation"]))
    panels = list(dict.fromkeys(zip(preds["setting"], preds["cohort"], strict=True)))
    fig = Figure(figsize=(4.2 * len(panels), 3.6 * len(harms)))
    axes = fig.subplots(len(harms), len(panels), squeeze=False)
    for i, harm in enumerate(harms):
        for j, (setting, cohort) in enumerate(panels):
            ax = axes[i][j]
            group = preds[(preds["harmonisation"] == harm) & (preds["setting"] == setting)
                          & (preds["cohort"] == cohort)]
            if group.empty:
                ax.set_axis_off()
                continue
            km = km_by_risk_group(
                group["time"], group["event"], group["score"],
                cutoffs=[group["risk_cutoff"].iloc[0]],
            )
            for label, (t, s) in km.curves.items():
                ax.step(np.r_[0, t], np.r_[1, s], where="post",
                        label=f"{label} (n={km.counts[label]})")
            p_text = f"log-rank p={km.p_value:.3f}" if np.isfinite(km.p_value) else "log-rank n/a"
            where = "internal CV" if setting != "external" else "external"
            ax.set(ylim=(0, 1.02), xlabel="months", ylabel="survival",
                   title=f"{where} {cohort}, {harm}\n{p_text}")
            ax.title.set_fontsize(9)
            ax.legend(fontsize=7, loc="lower left")
    fig.suptitle(_title(f"{task}: Kaplan-Meier by predicted risk (development median cut-off)",
                        simulated), fontsize=10)
    fig.tight_layout()
    return fig


def _figure_entry(figure: Mapping[str, Any]) -> dict[str, str]:
    """Accept ``{"src", "caption"}`` or ``{"files": FigureFiles, "caption"}``."""
    if "src" in figure:
        src = str(figure["src"])
    elif "files" in figure and hasattr(figure["files"], "data_uri"):
        src = figure["files"].data_uri
    else:
        raise DataError(f"report figure needs 'src' or 'files': got keys {sorted(figure)}")
    return {"src": src, "caption": str(figure.get("caption", ""))}


def _table_html(frame: pd.DataFrame) -> dict[str, Any]:
    """Columns and rows as plain strings for the template (which escapes them)."""
    def cell(value: Any) -> str:
        if isinstance(value, float | np.floating):
            return "" if np.isnan(value) else f"{value:.3f}"
        return str(value)

    return {
        "columns": [str(c) for c in frame.columns],
        "rows": [[cell(v) for v in row] for row in frame.itertuples(index=False)],
    }


def write_imaging_report(
    result: ValidationResult,
    out_dir: str | Path,
    *,
    title: str = "irtscope imaging outcome models",
    extra_sections: Sequence[Mapping[str, Any]] | None = None,
    provenance: Mapping[str, Any] | None = None,
    trials_report: str | None = None,
    ibsi_conformance: pd.DataFrame | str | Path | None = None,
) -> ImagingReportFiles:
    """Write ``metrics.csv`` (+ XLSX/Markdown), the summary table, figures and ``report.html``.

    Parameters
    ----------
    result : ValidationResult
        From :func:`~irtscope.imaging.internal_external_table`.
    out_dir : str or Path
    extra_sections : sequence of dict, optional
        Additional sections (see module docstring), e.g. the deep-learning results.
    provenance : mapping, optional
        Inputs and settings to print (manifest path, seed, extraction failures, ...).
    trials_report : str, optional
        Relative link to the trials report, shown beside this one.
    ibsi_conformance : DataFrame or path, optional
        The IBSI 1 conformance table of ``irtscope imaging ibsi-check --all``
        (``ibsi_conformance.csv``), embedded as its own section: reviewers check it first.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    figures_dir = out / "figures"
    table = result.table.copy()
    if table.empty:
        raise DataError("no validation results to report (empty metrics table)")
    table.insert(0, "data", "SIMULATED" if result.simulated else "real")
    metrics = write_table(table, out, "metrics")
    summary = internal_external_summary(result.table)
    summary_files = write_table(summary, out, "internal_vs_external")
    predictions_csv = out / "predictions.csv"
    preds = result.predictions.copy()
    preds.insert(0, "data", "SIMULATED" if result.simulated else "real")
    write_csv(preds, predictions_csv, index=False)
    if not result.excluded.empty:  # dropped feature columns, infinite values: say which
        write_csv(result.excluded, out / "excluded_features.csv", index=False)
    else:  # a list left by an earlier run into the same folder would mislead
        (out / "excluded_features.csv").unlink(missing_ok=True)

    figures = []
    pd_preds = result.predictions[result.predictions["task"] == "per-lesion PD"]
    if not pd_preds.empty:
        for name, make, caption in (
            ("roc_pd", _roc_figure, "ROC curves, per-lesion PD: internal CV (solid) versus "
             "external cohorts (dashed), without and with ComBat."),
            ("calibration_pd", _calibration_figure, "Calibration of the PD probabilities "
             "(quantile bins); the diagonal is perfect calibration."),
        ):
            files = save_figure(make(pd_preds, result.simulated), figures_dir, name)
            figures.append({"src": files.data_uri, "caption": _caption(caption, result.simulated)})
    for task in ("overall survival", "progression-free survival"):
        part = result.predictions[result.predictions["task"] == task]
        if part.empty:
            continue
        model = "radiomics+clinical" if (part["model"] == "radiomics+clinical").any() else (
            "radiomics")
        part = part[part["model"] == model]
        files = save_figure(_km_figure(part, task, result.simulated), figures_dir,
                            "km_" + task.split()[0].replace("-", "_"))
        figures.append({
            "src": files.data_uri,
            "caption": _caption(
                f"{task}, {model} survival forest: Kaplan-Meier curves of low/high predicted "
                "risk (cut at the development cohort's median out-of-fold risk).",
                result.simulated,
            ),
        })

    sections = []
    for section in extra_sections or []:
        html = section.get("html", "")
        if not isinstance(html, Markup):
            raise DataError(
                f"extra section {section.get('title')!r}: html must be markupsafe.Markup "
                "rendered from an autoescaped template"
            )
        sections.append({"title": str(section["title"]), "html": html,
                         "figures": [_figure_entry(f) for f in section.get("figures", [])]})

    ibsi = None
    if ibsi_conformance is not None:
        frame = (
            ibsi_conformance
            if isinstance(ibsi_conformance, pd.DataFrame)
            else pd.read_csv(ibsi_conformance)
        )
        ibsi = _table_html(frame)

    context = {
        "ibsi": ibsi,
        "title": _title(title, result.simulated),
        "simulated": result.simulated,
        "generated": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "version": __version__,
        "summary": _table_html(summary),
        "metrics": _table_html(table.drop(columns=["simulated"], errors="ignore")),
        "figures": figures,
        "sections": sections,
        "settings": {str(k): str(v) for k, v in result.settings.items()},
        "provenance": {str(k): str(v) for k, v in (provenance or {}).items()},
        "trials_report": trials_report,
        "files": {
            "metrics": metrics.csv.name,
            "summary": summary_files.csv.name,
            "predictions": predictions_csv.name,
        },
    }
    html = render_html("imaging_report.html.j2", context, template_dirs=[_TEMPLATES])
    report = out / "report.html"
    report.write_text(html, encoding="utf-8")
    return ImagingReportFiles(
        html=report, metrics_csv=metrics.csv, summary_csv=summary_files.csv,
        predictions_csv=predictions_csv,
    )
