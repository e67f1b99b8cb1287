"""Screening flow: counts at each step and the flow diagram (the reference study's Figure 1).

Counts come from the screening contract (one row per unique trial with its first failing
criterion) plus the store's hit summary (hits before de-duplication). Each excluded trial has
exactly one reason, so the counts telescope: hits -> unique -> in window -> ... -> included,
which :func:`flow_counts` checks rather than assumes.

Why non-interventional studies sit with the duplicates: the reference study's retrieval asked
the registry for interventional studies only, so its "unique trials" (373) never contained
them. Our queries may return other study types; removing them before the "unique trials
screened" box keeps that box comparable with the published one.
"""

from __future__ import annotations

import itertools
import textwrap
from collections.abc import Mapping

import pandas as pd
from matplotlib.figure import Figure

from irtscope._errors import DataError

__all__ = ["REASON_ORDER", "flow_counts", "flow_figure"]

#: Criterion ids in the reference order (contract).
REASON_ORDER: tuple[str, ...] = (
    "duplicate_record",
    "not_interventional",
    "outside_window",
    "not_nsclc",
    "other_immunotherapy",
    "other_combined_therapy",
    "no_radiotherapy",
    "no_immunotherapy",
    "aim_quality_of_life",
    "aim_biomarker",
    "aim_organoid",
    "duplicate_content",
)

#: exclusions made, in the reference study, by the retrieval itself (before "unique trials")
_RETRIEVAL_SIDE = ("duplicate_record", "not_interventional")

_DEFAULT_LABELS = {
    "duplicate_record": "Duplicate record or no NCT number",
    "not_interventional": "Not an interventional study",
    "outside_window": "Registered outside the study window",
    "not_nsclc": "Disease is not NSCLC",
    "other_immunotherapy": "Immunotherapy beyond PD-1/PD-L1/CTLA-4 inhibitors",
    "other_combined_therapy": "Other therapy combined with iRT",
    "no_radiotherapy": "No radiotherapy",
    "no_immunotherapy": "No immunotherapy",
    "aim_quality_of_life": "Aim: quality of life",
    "aim_biomarker": "Aim: biomarker evaluation",
    "aim_organoid": "Aim: organoid research",
    "duplicate_content": "Same trial under two NCT numbers",
}


def flow_counts(
    screening: pd.DataFrame,
    entries_read: int | None = None,
    published: Mapping[str, int] | None = None,
) -> pd.DataFrame:
    """Count every step of the screening flow.

    Parameters
    ----------
    screening
        The screening contract frame (``nct_id``, ``decision``, ``reason``, ``reason_label``).
    entries_read
        Registry hits before de-duplication (``store.hit_summary()["entries_read"]``); by
        default the number of screened rows (records given directly, no store).
    published
        Optional published counts keyed like the ``key`` column, shown beside ours.

    Returns
    -------
    DataFrame
        One row per step: ``key`` (``hits``, ``unique``, a criterion id, ``in_window``,
        ``included``), ``kind`` (``count`` for boxes on the main path, ``excluded`` for
        exclusions), ``label``, ``n``, ``remaining`` (trials left after the step) and
        ``published``. Retrieval-side exclusions (``duplicate_record``,
        ``not_interventional``) come before ``unique``, which counts the unique trials in the
        retrieval's scope (interventional studies for the reference protocol).
    """
    missing = {"nct_id", "decision", "reason"} - set(screening.columns)
    if missing:
        raise DataError(f"screening frame lacks columns {sorted(missing)}")
    excluded = screening[screening["decision"] != "included"]
    n_included = int((screening["decision"] == "included").sum())
    labels = dict(_DEFAULT_LABELS)
    if "reason_label" in screening.columns:
        for reason, label in zip(excluded["reason"], excluded["reason_label"], strict=True):
            if isinstance(label, str) and label:
                labels[str(reason)] = label
    by_reason = excluded["reason"].astype(str).value_counts().to_dict()
    unknown = set(by_reason) - set(REASON_ORDER)
    if unknown:
        raise DataError(f"screening frame has unknown exclusion reasons {sorted(unknown)}")
    dup_screened = int(by_reason.get("duplicate_record", 0))
    unique_records = len(screening) - dup_screened
    hits = len(screening) if entries_read is None else int(entries_read)
    if hits < unique_records:
        raise DataError(
            f"entries read ({hits}) is below the number of unique studies ({unique_records})"
        )
    not_interventional = int(by_reason.get("not_interventional", 0))
    unique = unique_records - not_interventional
    pub = _published_steps(published or {})
    rows: list[dict] = []

    def add(key: str, kind: str, label: str, n: int, remaining: int) -> None:
        rows.append(
            {
                "key": key,
                "kind": kind,
                "label": label,
                "n": n,
                "remaining": remaining,
                "published": pub.get(key),
            }
        )

    add("hits", "count", "Records identified (all queries, duplicates included)", hits, hits)
    add(
        "duplicate_record",
        "excluded",
        labels["duplicate_record"],
        hits - unique_records,
        unique_records,
    )
    add(
        "not_interventional",
        "excluded",
        labels["not_interventional"],
        not_interventional,
        unique,
    )
    add("unique", "count", "Unique trials screened", unique, unique)
    remaining = unique
    for reason in REASON_ORDER[len(_RETRIEVAL_SIDE) :]:
        n = int(by_reason.get(reason, 0))
        remaining -= n
        add(reason, "excluded", labels[reason], n, remaining)
        if reason == "outside_window":
            add("in_window", "count", "Registered within the study window", remaining, remaining)
    if remaining != n_included:
        raise DataError(
            f"screening counts do not telescope: {remaining} left after exclusions but "
            f"{n_included} marked included"
        )
    add("included", "count", "Trials included", n_included, n_included)
    return pd.DataFrame.from_records(
        rows, columns=["key", "kind", "label", "n", "remaining", "published"]
    )


def _published_steps(published: Mapping[str, int]) -> dict[str, int]:
    """Map a published flow (``entries_read``, ``unique_studies``, reasons) onto flow keys."""
    out = {k: int(v) for k, v in published.items() if k in REASON_ORDER or k == "included"}
    if "entries_read" in published:
        out["hits"] = int(published["entries_read"])
    if "unique_studies" in published:
        out["unique"] = int(published["unique_studies"])
        if "entries_read" in published:
            out["duplicate_record"] = int(published["entries_read"]) - out["unique"]
        if "outside_window" in published:
            out["in_window"] = out["unique"] - int(published["outside_window"])
    return out


def _box(ax, x: float, y: float, text: str, color: str, ha: str = "center") -> None:
    ax.text(
        x,
        y,
        text,
        ha=ha,
        va="center",
        multialignment="left" if ha == "left" else "center",
        fontsize=10,
        bbox={"boxstyle": "round,pad=0.5", "facecolor": color, "edgecolor": "#2a6f97"},
    )


def _arrow(ax, start: tuple[float, float], end: tuple[float, float]) -> None:
    ax.annotate(
        "",
        xy=end,
        xytext=start,
        arrowprops={"arrowstyle": "-|>", "color": "#2a6f97", "lw": 1.3, "shrinkA": 0, "shrinkB": 0},
    )


def flow_figure(flow: pd.DataFrame, title: str | None = None) -> Figure:
    """Draw the flow diagram: main path on the left, exclusions (with counts) on the right.

    Exclusion boxes branch off the main path between the boxes they separate, in the
    reference study's order; every criterion is listed, including those that excluded none.
    """
    counts = flow.set_index("key")
    n = counts["n"].to_dict()
    later = flow[
        (flow["kind"] == "excluded") & ~flow["key"].isin([*_RETRIEVAL_SIDE, "outside_window"])
    ]
    fig = Figure(figsize=(10, 6.4))
    ax = fig.add_axes((0, 0, 1, 1))
    ax.set_xlim(0, 10)
    ax.set_ylim(0, 10)
    ax.axis("off")
    main_x, side_x = 2.0, 4.3
    ys = {"hits": 9.3, "unique": 7.3, "in_window": 5.3, "included": 0.6}
    main_text = {
        "hits": f"Records identified\n(all queries)\nn = {n['hits']}",
        "unique": f"Unique trials screened\nn = {n['unique']}",
        "in_window": f"Registered within the window\nn = {n['in_window']}",
        "included": f"Trials included\nn = {n['included']}",
    }
    for key, y in ys.items():
        _box(ax, main_x, y, main_text[key], "#eef3f7")
    order = list(ys)
    for upper, lower in itertools.pairwise(order):
        _arrow(ax, (main_x, ys[upper] - 0.62), (main_x, ys[lower] + 0.5))
    label_window = textwrap.shorten(str(counts.loc["outside_window", "label"]), 70)
    # older flow frames (before the not_interventional criterion) lack its row
    n_other_type = n.get("not_interventional", 0)
    label_type = textwrap.shorten(
        str(counts["label"].get("not_interventional", _DEFAULT_LABELS["not_interventional"])), 40
    )
    side = [
        (
            8.3,
            f"Duplicates / no NCT number removed: n = {n['duplicate_record']}\n"
            f"{label_type}: n = {n_other_type}",
        ),
        (6.3, f"{label_window}: n = {n['outside_window']}"),
    ]
    for y, text in side:
        _box(ax, side_x, y, text, "#fdf1e6", ha="left")
        _arrow(ax, (main_x, y), (side_x - 0.15, y))
    lines = [f"Excluded after screening: n = {int(later['n'].sum())}"]
    lines += [
        f"  {textwrap.shorten(str(label), 58)}: {count}"
        for label, count in zip(later["label"], later["n"], strict=True)
    ]
    _box(ax, side_x, 3.0, "\n".join(lines), "#fdf1e6", ha="left")
    _arrow(ax, (main_x, 3.0), (side_x - 0.15, 3.0))
    if title:
        ax.text(5, 9.95, title, ha="center", va="top", fontsize=11, fontweight="bold")
    return fig
