"""Landscape figures: innovation points, trends by period, ICI drugs and regions.

Figures are built on :class:`matplotlib.figure.Figure` directly (no pyplot state), from the
same :class:`~irtscope.trials._describe.LandscapeData` the tables use, so a figure and its
table can never disagree. An empty panel says so in words instead of drawing nothing.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from irtscope.trials._describe import (
    ANY_LEVEL,
    INNOVATION_MAJORS,
    VOCABULARY,
    LandscapeData,
    counts_by_period,
)

__all__ = [
    "TREND_MIN_TRIALS",
    "ici_by_period_figure",
    "innovation_distribution_figure",
    "points_per_trial_figure",
    "regions_figure",
    "trend_categories",
    "trends_figure",
]

#: The reference study dropped categories with <= 5 trials in every period from its trends.
TREND_MIN_TRIALS = 5

_COLOURS = ["#2a6f97", "#e07a5f", "#81b29a", "#f2cc8f", "#6d597a", "#3d405b", "#b56576", "#999"]


def _empty(ax, message: str) -> None:
    ax.text(
        0.5,
        0.5,
        message,
        ha="center",
        va="center",
        fontsize=10,
        color="#57606a",
        wrap=True,
        transform=ax.transAxes,
    )
    ax.set_xticks([])
    ax.set_yticks([])


def innovation_distribution_figure(data: LandscapeData) -> Figure:
    """Trials per innovation subcategory, treatment side and population side (two panels)."""
    fig = Figure(figsize=(9, 10), layout="constrained")
    axes = fig.subplots(2, 1, height_ratios=[15, 15])
    for ax, side, title in (
        (axes[0], "treatment", "Treatment side (radiotherapy)"),
        (axes[1], "population", "Population side"),
    ):
        labels, values, colours = [], [], []
        majors = [v for v, (_label, s) in INNOVATION_MAJORS.items() if s == side]
        for i, variable in enumerate(majors):
            major_label = INNOVATION_MAJORS[variable][0]
            levels = list(VOCABULARY[variable]) + [
                lv for lv in data.levels(variable) if lv not in VOCABULARY[variable]
            ]
            for level in levels:
                labels.append(f"{major_label}: {level}")
                values.append(len(data.with_value(variable, level)))
                colours.append(_COLOURS[i % len(_COLOURS)])
        y = np.arange(len(labels))[::-1]
        ax.barh(y, values, color=colours)
        ax.set_yticks(y, labels, fontsize=8)
        for yy, value in zip(y, values, strict=True):
            ax.text(value, yy, f" {value}", va="center", fontsize=7)
        ax.set_xlabel(f"Trials (of {data.n})")
        ax.set_title(title, fontsize=10)
        ax.set_xlim(0, max([*values, 1]) * 1.15)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    fig.suptitle("Distribution of innovation points")
    return fig


def points_per_trial_figure(
    data: LandscapeData, published_pct: Mapping[str, float] | None = None
) -> Figure:
    """Share of trials by number of innovation major categories (0-8).

    ``published_pct`` (count -> %) overlays the reference study's distribution as markers.
    """
    fig = Figure(figsize=(7, 4))
    ax = fig.subplots()
    ks = [str(k) for k in range(len(INNOVATION_MAJORS) + 1)]
    counts = [len(data.with_value("innovation_major_count", k)) for k in ks]
    pct = [100 * c / data.n if data.n else 0.0 for c in counts]
    x = np.arange(len(ks))
    ax.bar(x, pct, color=_COLOURS[0], label="This snapshot")
    for xx, c, p in zip(x, counts, pct, strict=True):
        if c:
            ax.text(xx, p, f"{c}", ha="center", va="bottom", fontsize=8)
    if published_pct:
        px = [int(k) for k in published_pct]
        ax.plot(
            px,
            list(published_pct.values()),
            "D",
            color=_COLOURS[1],
            label="Published (Li & Ding 2025)",
        )
    ax.set_xticks(x, ks)
    ax.set_xlabel("Innovation major categories per trial")
    ax.set_ylabel(f"Trials (% of {data.n})")
    ax.set_title("Innovation points per trial")
    ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


def trend_categories(
    data: LandscapeData, level: str = "major", min_trials: int = TREND_MIN_TRIALS
) -> tuple[list[tuple[str, str, str]], list[tuple[str, str, str]]]:
    """Categories kept in and dropped from a trend figure.

    A category is dropped when it has ``<= min_trials`` trials in every period (the reference
    study's rule). Returns ``(kept, dropped)`` as lists of ``(variable, value, label)``.
    """
    candidates: list[tuple[str, str, str]] = []
    for variable, (label, _side) in INNOVATION_MAJORS.items():
        if level == "major":
            candidates.append((variable, ANY_LEVEL, label))
        else:
            for value in data.levels(variable):
                candidates.append((variable, value, value))
    kept, dropped = [], []
    for variable, value, label in candidates:
        per_period = counts_by_period(data, variable, [value]).iloc[0]
        (kept if (per_period > min_trials).any() else dropped).append((variable, value, label))
    return kept, dropped


def trends_figure(
    data: LandscapeData, level: str = "major", min_trials: int = TREND_MIN_TRIALS
) -> Figure:
    """Share of each period's trials per innovation (sub)category, with the <= 5 drop rule."""
    kept, dropped = trend_categories(data, level, min_trials)
    fig = Figure(figsize=(8, 4.8))
    ax = fig.subplots()
    sizes = [len(data.period_ids(p)) for p in data.periods]
    x = np.arange(len(data.periods))
    for i, (variable, value, label) in enumerate(kept):
        counts = counts_by_period(data, variable, [value]).iloc[0].to_numpy()
        share = [100 * c / s if s else np.nan for c, s in zip(counts, sizes, strict=True)]
        ax.plot(x, share, marker="o", color=_COLOURS[i % len(_COLOURS)], label=label)
    what = "major categories" if level == "major" else "subcategories"
    if not kept:
        _empty(ax, f"No innovation {what} with more than {min_trials} trials in any period")
    else:
        ax.set_xticks(x, [f"{p}\n(n={s})" for p, s in zip(data.periods, sizes, strict=True)])
        ax.set_ylabel("Trials in period (%)")
        ax.legend(fontsize=7, loc="center left", bbox_to_anchor=(1.0, 0.5))
    ax.set_title(f"Trends by period: innovation {what}")
    if dropped:
        fig.text(
            0.01,
            0.01,
            f"{len(dropped)} {what} with ≤{min_trials} trials in every period not shown",
            fontsize=7,
            color="#57606a",
        )
    fig.tight_layout()
    return fig


def ici_by_period_figure(data: LandscapeData) -> Figure:
    """Trials naming each ICI drug, grouped by registration period."""
    fig = Figure(figsize=(9, 4.5))
    ax = fig.subplots()
    table = counts_by_period(data, "ici_drug")
    if table.empty:
        _empty(ax, "No ICI drug named in the included trials")
    else:
        order = table.sum(axis=1).sort_values(ascending=False).index
        table = table.loc[order]
        x = np.arange(len(table))
        width = 0.8 / max(len(data.periods), 1)
        for i, period in enumerate(data.periods):
            ax.bar(
                x + i * width, table[period], width, label=period, color=_COLOURS[i % len(_COLOURS)]
            )
        ax.set_xticks(x + width * (len(data.periods) - 1) / 2, table.index, rotation=30, ha="right")
        ax.set_ylabel("Trials")
        ax.legend(fontsize=8)
    ax.set_title("ICI drugs by registration period")
    fig.tight_layout()
    return fig


def regions_figure(data: LandscapeData) -> Figure:
    """Trials per region, stacked by registration period."""
    fig = Figure(figsize=(8, 4.2))
    ax = fig.subplots()
    table = counts_by_period(data, "region")
    if table.empty:
        _empty(ax, "No region recorded for the included trials")
    else:
        y = np.arange(len(table))[::-1]
        left = np.zeros(len(table))
        for i, period in enumerate(data.periods):
            values = table[period].to_numpy(dtype=float)
            ax.barh(y, values, left=left, label=period, color=_COLOURS[i % len(_COLOURS)])
            left += values
        ax.set_yticks(y, table.index)
        ax.set_xlabel("Trials")
        ax.legend(fontsize=8)
    ax.set_title("Regions (one per trial) by registration period")
    fig.tight_layout()
    return fig
