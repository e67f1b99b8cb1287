"""The landscape report: screen -> classify -> describe -> tables, figures and one HTML page.

:func:`build_landscape_report` is the single entry point the CLI calls. It writes, under
``out_dir``:

- ``report.html``: self-contained (figures embedded as data URIs, inline CSS, no script and no
  external resource), so it can be mailed or archived and still open years later;
- ``tables/<name>.{csv,xlsx,md}``: every table, including ``explain`` (the NCT ids behind
  every cell), ``screening`` (every decision with its evidence) and ``published_vs_snapshot``;
- ``figures/<name>.{png,svg}``;
- ``provenance.json``: protocol fingerprint, snapshot info, package versions.

Registry text is untrusted; the template relies on Jinja2 autoescaping (never ``|safe`` on
registry text), which the browser test checks with an injected ``<script>`` title.
"""

from __future__ import annotations

import datetime as dt
import json
import re
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from importlib import metadata, resources
from pathlib import Path
from typing import Any

import pandas as pd

from irtscope._errors import DataError
from irtscope.report import FigureFiles, TableFiles, render_html, save_figure, write_table
from irtscope.trials._describe import (
    INNOVATION_MAJORS,
    LandscapeData,
    explain_table,
    ici_table,
    innovation_count_table,
    innovation_table,
    table1,
    table2,
)
from irtscope.trials._figures import (
    TREND_MIN_TRIALS,
    ici_by_period_figure,
    innovation_distribution_figure,
    points_per_trial_figure,
    regions_figure,
    trend_categories,
    trends_figure,
)
from irtscope.trials._flow import flow_counts, flow_figure
from irtscope.trials._published import PublishedStudy, comparison_table, load_published

__all__ = [
    "REPORT_SECTIONS",
    "ReportResult",
    "build_landscape_report",
    "explain_rows",
    "iter_explain_lines",
    "write_landscape_report",
]

ProgressCallback = Callable[[int, "int | None", str], None]

#: Section ids of the HTML report, in page order (the browser test checks each one).
REPORT_SECTIONS: dict[str, str] = {
    "summary": "Summary",
    "published-vs-snapshot": "Published vs this snapshot",
    "flow": "Screening flow",
    "table1": "Table 1. General characteristics",
    "table2": "Table 2. Design",
    "ici": "Immune checkpoint inhibitors",
    "innovation": "Innovation points",
    "innovation-figures": "Distribution of innovation points",
    "trends": "Trends by period",
    "ici-figures": "ICI drugs by period",
    "regions": "Regions",
    "included-trials": "Included trials",
    "screening": "Excluded trials",
    "overrides": "Reviewer overrides",
    "methods": "Methods and provenance",
}

_TEMPLATE_DIR = Path(__file__).parent / "templates"
_KEY_COLUMNS = ("variable", "value")
CLASSIFICATION_COLUMNS = ("nct_id", "variable", "value", "field", "evidence", "confidence")
_EXCEL_CELL_MAX = 32767
_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f]")


@dataclass
class ReportResult:
    """Everything a report run produced (paths and the frames behind them)."""

    out_dir: Path
    html: Path
    tables: dict[str, TableFiles]
    figures: dict[str, FigureFiles]
    screening: pd.DataFrame
    classification: pd.DataFrame
    flow: pd.DataFrame
    data: LandscapeData
    comparison: pd.DataFrame | None
    explain: pd.DataFrame
    snapshot: dict[str, Any] = field(default_factory=dict)
    #: what changed since an earlier snapshot (:class:`~irtscope.trials._changes.SnapshotChanges`)
    changes: Any = None

    @property
    def n_included(self) -> int:
        return self.data.n


def _nct(study: Mapping[str, Any]) -> str | None:
    ident = study.get("protocolSection", {}).get("identificationModule", {})
    return ident.get("nctId")


def _title(study: Mapping[str, Any]) -> str:
    ident = study.get("protocolSection", {}).get("identificationModule", {})
    return str(ident.get("briefTitle") or ident.get("officialTitle") or "")


def _lead_sponsor(study: Mapping[str, Any]) -> str:
    module = study.get("protocolSection", {}).get("sponsorCollaboratorsModule", {})
    return str((module.get("leadSponsor") or {}).get("name") or "")


def _short(text: str, limit: int = 240) -> str:
    text = " ".join(str(text).split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _call_evidence(evidence: str, rule: str) -> str:
    """The evidence behind one screening call: the override if any, else the deciding rule."""
    try:
        items = json.loads(evidence or "[]")
    except (TypeError, ValueError):
        return ""
    for wanted in ("override", rule):
        chosen = [i for i in items if isinstance(i, dict) and i.get("rule") == wanted]
        if chosen:
            item = chosen[-1]
            return _short(f"{item.get('field', '')}: {item.get('text', '')}")
    return ""


def _override_rows(screening: pd.DataFrame, classification: pd.DataFrame) -> list[dict]:
    """Every reviewer override in force: what it set, who, when and why (for the report)."""
    rows = []
    for r in screening[screening["overridden"].astype(bool)].itertuples(index=False):
        rows.append(
            {
                "nct_id": r.nct_id,
                "variable": "decision",
                "value": r.decision + (f" ({r.reason})" if r.reason else ""),
                "evidence": _call_evidence(r.evidence, "override"),
            }
        )
    if "overridden" in classification.columns:
        chosen = classification[classification["overridden"].fillna(False).astype(bool)]
        for (nct, variable), group in chosen.groupby(["nct_id", "variable"], sort=True):
            first = group.iloc[0]
            rows.append(
                {
                    "nct_id": nct,
                    "variable": variable,
                    "value": "; ".join(map(str, group["value"])),
                    "evidence": _short(f"{first['field']}: {first['evidence']}"),
                }
            )
    return rows


def _version_holder(study: Mapping[str, Any]) -> str | None:
    misc = study.get("derivedSection", {}).get("miscInfoModule", {})
    value = misc.get("versionHolder")
    return str(value) if value else None


def _counted(
    items: list[dict], progress: ProgressCallback | None, description: str
) -> Iterator[dict]:
    """Yield ``items`` while advancing ``progress`` (screen/classify take no callback)."""
    if progress is not None:
        progress(0, len(items), description)
    for item in items:
        yield item
        if progress is not None:
            progress(1, None, "")


def _current_snapshots(store: Any) -> dict[str, Any]:
    """Source and data timestamp over every snapshot that still holds a current study.

    ``snapshot_info`` describes the latest snapshot only; after several imports or harvests
    the trials come from several, and the report must not date all of them by the last one
    (e.g. a 2024 file imported after a 2026 one).
    """
    con = getattr(store, "con", None)
    if con is None:
        return {}
    rows = con.execute(
        """SELECT s.source, s.data_timestamp, max(s.retrieved_at)
           FROM snapshots s JOIN study_versions v USING (snapshot_id)
           WHERE v.is_current GROUP BY ALL ORDER BY 3"""
    ).fetchall()
    if len(rows) <= 1:
        return {}
    sources = list(dict.fromkeys(str(r[0]) for r in rows))
    stamps = sorted({str(r[1]) for r in rows if r[1]})
    out: dict[str, Any] = {"source": f"{len(sources)} sources: " + "; ".join(sources)}
    if stamps:
        out["data_timestamp"] = stamps[0] if len(stamps) == 1 else f"{stamps[0]} to {stamps[-1]}"
    return out


def _load_inputs(
    studies_or_store: Any,
) -> tuple[list[dict], int, dict[str, Any]]:
    """Studies, entries read (hits) and snapshot info from a Store or an iterable of dicts."""
    if hasattr(studies_or_store, "iter_studies"):
        store = studies_or_store
        studies = list(store.iter_studies())
        hits = int(store.hit_summary().get("entries_read", len(studies)))
        snapshot = dict(store.snapshot_info() or {})
        snapshot.update(_current_snapshots(store))
    else:
        studies = list(studies_or_store)
        hits = len(studies)
        snapshot = {"source": "records given directly", "retrieved_at": None}
    if not snapshot.get("data_timestamp"):
        # The registry stamps every export with its data version; the newest one dates the
        # snapshot when the source did not record it.
        stamps = [s for s in map(_version_holder, studies) if s]
        snapshot["data_timestamp"] = max(stamps) if stamps else None
    return studies, hits, {k: (None if v is None else str(v)) for k, v in snapshot.items()}


def _excel_safe(value: Any) -> Any:
    if not isinstance(value, str):
        return value
    value = _CONTROL.sub(" ", value)
    if len(value) > _EXCEL_CELL_MAX:
        value = value[: _EXCEL_CELL_MAX - 20] + " ...[truncated]"
    return value


def _clean(frame: pd.DataFrame) -> pd.DataFrame:
    """Make registry text storable in XLSX: no control characters, cells within Excel's limit.

    The CSV of the same table is written from this frame too, so all three formats agree;
    the untruncated evidence stays in the store and in the screening call itself.
    """
    out = frame.copy()
    for column in out.columns:
        if out[column].dtype == object:
            out[column] = out[column].map(_excel_safe)
    return out


def _html_table(frame: pd.DataFrame, group_column: str | None = "Variable") -> dict[str, Any]:
    """Columns and rows for the template; key columns hidden, repeated group labels blanked."""
    columns = [c for c in frame.columns if c not in _KEY_COLUMNS]
    rows = []
    previous = None
    for record in frame[columns].astype(str).to_dict("records"):
        first = group_column is not None and record.get(group_column) != previous
        if group_column is not None:
            previous = record.get(group_column)
        rows.append({"cells": [record[c] for c in columns], "first": first})
    return {"columns": columns, "rows": rows, "group": group_column}


def _largest_differences(comparison: pd.DataFrame | None, k: int = 8) -> list[dict[str, str]]:
    """The published rows where this snapshot differs most (all-period rows, |pp| first)."""
    if comparison is None or comparison.empty:
        return []
    frame = comparison[(comparison["Period"] == "all") & (comparison["Difference (pp)"] != "")]
    size = frame["Difference (pp)"].astype(float).abs()
    top = frame.loc[size.sort_values(ascending=False, kind="stable").index[:k]]
    columns = ["Variable", "Level", "Published n (%)", "This snapshot n (%)", "Difference (pp)"]
    return top[columns].astype(str).to_dict("records")


def _versions() -> dict[str, str]:
    out = {}
    for name in ("irtscope", "pandas", "matplotlib", "scipy", "statsmodels", "jinja2"):
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = "unknown"
    return out


def _published_for(protocol_name: str) -> PublishedStudy | None:
    resource = resources.files("irtscope.trials").joinpath(f"published/{protocol_name}.yaml")
    return load_published(protocol_name) if resource.is_file() else None


def build_landscape_report(
    studies_or_store: Any,
    protocol: Any = "nsclc-irt",
    out_dir: str | Path = "landscape-report",
    overrides: Any = None,
    progress: ProgressCallback | None = None,
    as_of: int | str | None = None,
    since: int | str | None = None,
    banner: str | None = None,
) -> ReportResult:
    """Screen, classify and describe a set of registry records and write the full report.

    Parameters
    ----------
    studies_or_store
        An open :class:`irtscope.trials.Store` (hits, snapshot timestamp and studies come from
        it) or an iterable of raw API v2 study dicts.
    protocol
        Protocol name, YAML path or :class:`~irtscope.trials.Protocol`.
    out_dir
        Output folder (created).
    overrides
        Reviewer overrides (file or frame), passed unchanged to ``screen_studies`` (decision
        rows) and ``classify_studies`` (variable rows).
    progress
        ``progress(advance, total, description)`` for screening and classification.
    as_of
        Store only: report the landscape as it was at this snapshot (id or ``YYYY-MM-DD``,
        see :mod:`._asof`) instead of now.
    since
        Store only: add the "Changes since" section from this snapshot (id or date) to the
        reported one. Without it the section compares with the snapshot before the reported
        one, when the store has one.
    banner
        A notice at the top of the report (escaped like all text): e.g. that the records are
        archived ones, not a live search (see :mod:`._archive`).

    Returns
    -------
    ReportResult

    Raises
    ------
    DataError
        No records to report on, or screening counts that do not add up.
    """
    from irtscope.trials._classify import classify_studies
    from irtscope.trials._protocol import load_protocol
    from irtscope.trials._screen import screen_studies

    proto = load_protocol(protocol)
    store, until = _as_of_store(studies_or_store, as_of, since)
    if until is not None:
        from irtscope.trials._asof import StoreAsOf

        studies_or_store = StoreAsOf(store, until)
    studies, hits, snapshot = _load_inputs(studies_or_store)
    if not studies:
        raise DataError("no registry records to report on (empty store or source)")

    screening = screen_studies(_counted(studies, progress, "Screening"), proto, overrides=overrides)
    included_ids = set(screening.loc[screening["decision"] == "included", "nct_id"])
    included = _unique_by_id(studies, included_ids)
    if included:
        classification = classify_studies(
            _counted(included, progress, "Classifying"), proto, overrides=overrides
        )
    else:
        classification = pd.DataFrame(columns=list(CLASSIFICATION_COLUMNS))
    changes = _snapshot_changes(store, proto, since, until, overrides)
    return write_landscape_report(
        screening,
        classification,
        studies,
        out_dir,
        protocol=proto,
        entries_read=hits,
        snapshot=snapshot,
        progress=progress,
        changes=changes,
        banner=banner,
    )


def _as_of_store(source: Any, as_of: Any, since: Any) -> tuple[Any, int | None]:
    """The store behind ``source`` (``None`` for plain records) and the ``as_of`` snapshot id."""
    store = source if hasattr(source, "iter_studies") and hasattr(source, "con") else None
    if store is None and (as_of is not None or since is not None):
        raise DataError("as_of and since need a trials Store (they read its snapshots)")
    if as_of is None:
        return store, None
    from irtscope.trials._asof import resolve_snapshot

    return store, resolve_snapshot(store, as_of)


def _snapshot_changes(store: Any, proto: Any, since: Any, until: int | None, overrides: Any) -> Any:
    """Changes for the report's section: only when there is an earlier snapshot to compare."""
    if store is None:
        return None
    from irtscope.trials._asof import list_snapshots
    from irtscope.trials._changes import compare_snapshots

    if since is None:
        ids = list_snapshots(store)["snapshot_id"]
        last = until if until is not None else (int(ids.max()) if len(ids) else None)
        if last is None or not (ids < last).any():
            return None
    return compare_snapshots(store, proto, since=since, until=until, overrides=overrides)


def _unique_by_id(studies: Iterable[dict], wanted: set[str]) -> list[dict]:
    by_id: dict[str, dict] = {}
    for study in studies:
        nct = _nct(study)
        if nct in wanted and nct not in by_id:
            by_id[nct] = study
    return [by_id[n] for n in sorted(by_id)]


def write_landscape_report(
    screening: pd.DataFrame,
    classification: pd.DataFrame,
    studies: Iterable[dict],
    out_dir: str | Path,
    *,
    protocol: Any,
    entries_read: int | None = None,
    snapshot: Mapping[str, Any] | None = None,
    progress: ProgressCallback | None = None,
    changes: Any = None,
    banner: str | None = None,
) -> ReportResult:
    """Write tables, figures and HTML from screening and classification frames (contracts).

    This is the half of :func:`build_landscape_report` after screening and classification, so
    the report can be rendered from frames built or reviewed elsewhere.

    Parameters
    ----------
    screening, classification
        Frames per the screening and (long-form) classification contracts.
    studies
        The raw study dicts (titles for the trial lists).
    out_dir
        Output folder (created).
    protocol
        A :class:`~irtscope.trials.Protocol` (periods, name, fingerprint).
    entries_read
        Registry hits before de-duplication; default: the screened rows.
    snapshot
        ``source``, ``retrieved_at``, ``data_timestamp`` of the data.
    changes
        A :class:`~irtscope.trials._changes.SnapshotChanges`: adds the "Changes since"
        section, ``tables/changes.*`` and ``figures/status_flows.*``.
    """
    proto = protocol
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    studies = list(studies)
    snapshot = {"source": None, "retrieved_at": None, "data_timestamp": None, **(snapshot or {})}
    if not snapshot.get("data_timestamp"):
        stamps = [v for v in map(_version_holder, studies) if v]
        snapshot["data_timestamp"] = max(stamps) if stamps else None
    hits = len(screening) if entries_read is None else entries_read
    included_ids = set(screening.loc[screening["decision"] == "included", "nct_id"])
    by_id = {_nct(s): s for s in _unique_by_id(studies, included_ids)}
    periods = [p.label for p in proto.periods] or ["all"]
    data = LandscapeData.from_classification(classification, included_ids, periods=periods)
    published = _published_for(proto.name)

    flow = flow_counts(screening, hits, published.flow if published else None)
    tables: dict[str, pd.DataFrame] = {
        "table1_general": table1(data),
        "table2_design": table2(data),
        "ici": ici_table(data),
        "innovation": innovation_table(data),
        "innovation_points_per_trial": innovation_count_table(data),
        "flow": flow,
        "explain": explain_table(data),
    }
    comparison = None
    if published is not None:
        comparison = comparison_table(published, data, snapshot.get("data_timestamp"))
        tables["published_vs_snapshot"] = comparison
    screening_out = screening.copy()
    titles = {_nct(s): _title(s) for s in studies}
    screening_out.insert(1, "title", screening_out["nct_id"].map(titles).fillna(""))
    tables["screening"] = screening_out
    tables["classification"] = classification

    table_files = {
        name: write_table(_clean(frame), out / "tables", name) for name, frame in tables.items()
    }

    published_counts = None
    if published is not None:
        published_counts = {
            r.value: published.percent(r)
            for r in published.rows
            if r.variable == "innovation_major_count" and r.period is None
        }
    if progress is not None:
        progress(0, 7, "Drawing figures")
    figures = {
        "flow_diagram": flow_figure(flow),
        "innovation_distribution": innovation_distribution_figure(data),
        "points_per_trial": points_per_trial_figure(data, published_counts),
        "trends_major": trends_figure(data, "major"),
        "trends_subcategories": trends_figure(data, "sub"),
        "ici_by_period": ici_by_period_figure(data),
        "regions": regions_figure(data),
    }
    figure_files = {}
    for name, fig in figures.items():
        figure_files[name] = save_figure(fig, out / "figures", name)
        if progress is not None:
            progress(1, None, "")
    changes_context = None
    if changes is not None:
        from irtscope.trials._changes import report_section

        changes_context, table_files["changes"], figure_files["status_flows"] = report_section(
            changes, out, _clean
        )

    kept_sub, dropped_sub = trend_categories(data, "sub")
    kept_major, dropped_major = trend_categories(data, "major")
    by_nct = {
        var: {nct: value for value, ids in data.members.get(var, {}).items() for nct in ids}
        for var in ("period", "phase", "status", "sponsor_type")
    }
    included_rows = [
        {
            "nct_id": nct,
            "title": _title(by_id.get(nct, {})),
            "period": by_nct["period"].get(nct, ""),
            "phase": by_nct["phase"].get(nct, ""),
            "status": by_nct["status"].get(nct, ""),
            "sponsor_type": by_nct["sponsor_type"].get(nct, ""),
            "sponsor": _lead_sponsor(by_id.get(nct, {})),
        }
        for nct in sorted(included_ids)
    ]
    excluded_rows = screening_out[screening_out["decision"] != "included"].copy()
    excluded_rows["evidence"] = [
        _call_evidence(ev, reason)
        for ev, reason in zip(excluded_rows["evidence"], excluded_rows["reason"], strict=True)
    ]
    excluded_rows["overridden"] = excluded_rows["overridden"].astype(bool)
    provenance = {
        "generated_at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "protocol": proto.name,
        "protocol_fingerprint": proto.fingerprint(),
        "snapshot": snapshot,
        "entries_read": hits,
        "unique_studies": int(flow.set_index("key").loc["unique", "n"]),
        "included": data.n,
        "versions": _versions(),
        "published_reference": published.citation if published else None,
        "banner": banner,
    }
    (out / "provenance.json").write_text(json.dumps(provenance, indent=2), encoding="utf-8")

    context = {
        "title": f"Trial landscape: {proto.title or proto.name}",
        "protocol": proto,
        "snapshot": snapshot,
        "provenance": provenance,
        "published": published,
        "sections": REPORT_SECTIONS,
        "n_included": data.n,
        "period_sizes": {p: len(data.period_ids(p)) for p in data.periods},
        "flow": flow.to_dict("records"),
        "tables": {
            name: _html_table(frame)
            for name, frame in tables.items()
            if name
            in (
                "table1_general",
                "table2_design",
                "ici",
                "innovation",
                "innovation_points_per_trial",
            )
        },
        "comparison": _html_table(comparison) if comparison is not None else None,
        "headline": _largest_differences(comparison),
        "figures": {name: files.data_uri for name, files in figure_files.items()},
        "trend_min": TREND_MIN_TRIALS,
        "dropped_major": [label for _v, _val, label in dropped_major],
        "dropped_sub": [label for _v, _val, label in dropped_sub],
        "kept_major": len(kept_major),
        "kept_sub": len(kept_sub),
        "included_trials": included_rows,
        "excluded_trials": excluded_rows[
            ["nct_id", "title", "reason_label", "evidence", "overridden"]
        ].to_dict("records"),
        "overrides": _override_rows(screening, classification),
        "changes": changes_context,
        "table_names": sorted(table_files),
        "majors": INNOVATION_MAJORS,
        "banner": banner,
        # `make demo` writes the imaging report beside this one (build/demo/imaging)
        "imaging_report": (
            "../imaging/report.html" if (out.parent / "imaging" / "report.html").is_file() else None
        ),
    }
    html = render_html("landscape_report.html.j2", context, template_dirs=[_TEMPLATE_DIR])
    html_path = out / "report.html"
    html_path.write_text(html, encoding="utf-8")
    return ReportResult(
        out_dir=out,
        html=html_path,
        tables=table_files,
        figures=figure_files,
        screening=screening,
        classification=classification,
        flow=flow,
        data=data,
        comparison=comparison,
        explain=tables["explain"],
        snapshot=snapshot,
        changes=changes,
    )


def explain_rows(explain: pd.DataFrame, spec: str) -> pd.DataFrame:
    """Select explain-table rows for ``spec``: ``variable`` or ``variable=value``.

    Raises
    ------
    DataError
        When nothing matches (the message lists the known variables).
    """
    variable, _sep, value = spec.partition("=")
    mask = explain["variable"] == variable.strip()
    if value:
        mask &= explain["value"] == value.strip()
    rows = explain[mask]
    if rows.empty:
        values = explain.loc[explain["variable"] == variable.strip(), "value"]
        if not values.empty:  # a known variable: say which values it has
            known = ", ".join(sorted(set(values.astype(str))))
            raise DataError(
                f"--explain {spec!r} matches no table cell; {variable.strip()} values: {known}"
            )
        known = ", ".join(sorted(set(explain["variable"])))
        raise DataError(f"--explain {spec!r} matches no table cell; variables: {known}")
    return rows


def iter_explain_lines(rows: pd.DataFrame) -> Iterable[str]:
    """One human line per explain row (used by ``trials report --explain``)."""
    for row in rows.itertuples(index=False):
        ids = row.nct_ids.replace(";", ", ") if row.nct_ids else "(none)"
        cell = f"{row.table} {row.variable}={row.value} [{row.column}]"
        yield f"{cell} {row.n}/{row.denominator}: {ids}"
