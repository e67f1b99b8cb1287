"""What changed in a landscape between two registry snapshots (a "living" landscape).

A living review re-runs its search every few months; what the reviewers need is the list of
what changed, not a second report to compare by eye. :func:`compare_snapshots` takes two
snapshots of one store (by default the two latest), rebuilds the landscape as of each
(:mod:`._asof`), screens and classifies both with the same protocol and overrides, and
returns one row per change (:data:`CHANGE_COLUMNS`).

Records are compared field by field *after normalisation* (:func:`._normalize.normalize_study`
plus the canonical forms below), so a legacy-XML snapshot followed by an API v2 snapshot of the
same trial reports what the registry changed, not how the two formats spell it: enum spellings
("Active, not recruiting" / ``ACTIVE_NOT_RECRUITING``, "Anticipated" / ``ESTIMATED``), date
precision ("March 2023" vs ``2023-03-15`` is the same month, so not a move), whitespace of
free text, phase spellings ("Phase 1/Phase 2" / ``[PHASE1, PHASE2]``). Variables derived only
from format-sensitive registry codes (age groups from ``stdAges``, funder type from the
sponsor class) are not compared, and registry-coded classification variables (status, phase,
enrollment, ...) are reported once, as the registry field change, not again as a value.
"""

from __future__ import annotations

import datetime as dt
import json
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import asdict, dataclass, fields
from typing import Any

import pandas as pd

from irtscope._errors import DataError
from irtscope.trials._asof import iter_studies_as_of, resolve_snapshot, snapshot_row
from irtscope.trials._normalize import normalize_study, parse_partial_date

__all__ = [
    "CHANGE_COLUMNS",
    "CHANGE_KINDS",
    "Change",
    "SnapshotChanges",
    "compare_snapshots",
    "compare_studies",
    "status_flow_figure",
    "status_flow_text",
]

ProgressCallback = Callable[[int, "int | None", str], None]

#: Kinds of change, most consequential first (the order of the report's table), with labels.
CHANGE_KINDS: dict[str, str] = {
    "left": "left the landscape",
    "entered": "entered the landscape",
    "status": "status changed",
    "results_posted": "results first posted",
    "enrollment": "enrollment changed",
    "completion_date": "completion date moved",
    "start_date": "start date moved",
    "phase": "phase changed",
    "sponsor": "sponsor changed",
    "interventions": "interventions changed",
    "arms": "arms changed",
    "classification": "classification value changed",
}
_RANK = {kind: i for i, kind in enumerate(CHANGE_KINDS)}

#: Classification variables not compared: registry-coded ones are reported as their registry
#: field (status, results, enrollment, phase), and the rest follow only from codes the two
#: formats spell differently or from the registration date (which does not change).
SKIPPED_VARIABLES = frozenset(
    {
        "status",
        "has_results",
        "why_stopped",
        "enrollment",
        "enrollment_bin",
        "phase",
        "registration_year",
        "period",
        "age_groups",
        "funder_type",
    }
)
_STOPPED = frozenset({"TERMINATED", "WITHDRAWN", "SUSPENDED"})


@dataclass(frozen=True)
class Change:
    """One change of one trial between two snapshots (a row of :data:`CHANGE_COLUMNS`)."""

    #: NCT id of the trial
    nct_id: str
    #: brief title as registered at the later snapshot (else the earlier one)
    title: str
    #: one of :data:`CHANGE_KINDS`
    kind: str
    #: the normalised field or classification variable (e.g. ``overall_status``, ``stage``)
    field: str
    #: value at the earlier snapshot, as text ("" when absent)
    old: str
    #: value at the later snapshot, as text ("" when absent)
    new: str
    #: size of the change: enrollment difference (participants) or months a date moved
    delta: float | None
    #: unit of ``delta``: ``participants``, ``months`` or ""
    unit: str
    #: status: why-stopped category; entered/left: criterion id or how; enrollment:
    #: ``anticipated->actual`` when the type changed; else ""
    category: str
    #: one line a person reads
    detail: str
    #: registry text behind the old value (classification, screening), ""
    old_evidence: str
    #: registry text behind the new value (why-stopped text, screening, classification), ""
    new_evidence: str
    #: included by the screening at the earlier / later snapshot
    included_before: bool
    included_after: bool
    #: order of consequence: the kind's position in :data:`CHANGE_KINDS`
    rank: int


#: Columns (and order) of the changes table; one row per :class:`Change`.
CHANGE_COLUMNS: tuple[str, ...] = tuple(f.name for f in fields(Change))


# -- canonical forms ------------------------------------------------------------------------
_NON_ALNUM = re.compile(r"[^A-Z0-9]+")
_SPACE = re.compile(r"\s+")


def _enum(value: Any) -> str | None:
    """``"Active, not recruiting"`` and ``ACTIVE_NOT_RECRUITING`` -> ``ACTIVE_NOT_RECRUITING``."""
    if not isinstance(value, str) or not value.strip():
        return None
    code = _NON_ALNUM.sub("_", value.strip().upper()).strip("_")
    return {"UNKNOWN_STATUS": "UNKNOWN", "ANTICIPATED": "ESTIMATED"}.get(code, code)


def _label(code: str | None) -> str:
    return "" if not code else code.lower().replace("_", " ")


def _clean_text(value: Any) -> str:
    return _SPACE.sub(" ", value).strip() if isinstance(value, str) else ""


def _key(value: Any) -> str:
    return _clean_text(value).casefold()


def _phases(values: Any) -> frozenset[str]:
    """``["Phase 1/Phase 2"]``, ``["PHASE1", "PHASE2"]`` -> ``{PHASE1, PHASE2}``; N/A -> NA."""
    out: set[str] = set()
    for value in values or ():
        if not isinstance(value, str):
            continue
        if value.strip().upper() in {"N/A", "NA", "NOT APPLICABLE"}:
            out.add("NA")
            continue
        for part in value.split("/"):
            code = _NON_ALNUM.sub("", part.upper())
            if code:
                out.add(code)
    return frozenset(out)


def _phase_label(codes: frozenset[str]) -> str:
    names = {"NA": "NA", "EARLYPHASE1": "early 1"}
    return "/".join(names.get(c, c.replace("PHASE", "")) for c in sorted(codes))


def _parse_date(text: Any) -> tuple[dt.date, str] | None:
    """First day and precision (``yyyy``, ``yyyy-mm``, ``yyyy-mm-dd``) of a registry date.

    Accepts the API's ISO forms and the legacy spellings ("March 2023", "March 5, 2023").
    """
    if not isinstance(text, str) or not text.strip():
        return None
    _value, precision, first = parse_partial_date(text)
    if precision == "yyyy-mm-dd" or (precision and first):
        return first, precision  # type: ignore[return-value]
    for fmt, prec in (("%B %d, %Y", "yyyy-mm-dd"), ("%B %Y", "yyyy-mm"), ("%b %Y", "yyyy-mm")):
        try:
            return dt.datetime.strptime(text.strip(), fmt).date(), prec
        except ValueError:
            continue
    return None


def _date_moved(old: Any, new: Any) -> float | None:
    """Months a date moved, ``0.0``-free: ``None`` when it did not (at the coarser precision).

    "2023-03" and "2023-03-15" name the same month, so they are the same date written at two
    precisions (a format difference), not a move.
    """
    a, b = _parse_date(old), _parse_date(new)
    if a is None or b is None:
        return None
    (da, pa_), (db, pb) = a, b
    coarse = min(pa_, pb, key=len)
    width = {"yyyy": 1, "yyyy-mm": 2, "yyyy-mm-dd": 3}[coarse]
    if (da.year, da.month, da.day)[:width] == (db.year, db.month, db.day)[:width]:
        return None
    return round((db - da).days / 30.4375, 1)


@dataclass(frozen=True)
class _Facts:
    """The compared fields of one record, in canonical form."""

    title: str
    status: str | None
    why_stopped: str
    has_results: bool
    results_date: str
    enrollment: int | None
    enrollment_type: str | None
    dates: tuple[tuple[str, str | None, str | None], ...]  # (field, date text, type)
    phases: frozenset[str]
    lead_sponsor: str
    lead_sponsor_text: str
    collaborators: dict[str, str]  # name key -> name as registered
    interventions: dict[tuple[str, str], str]  # (type, name key) -> "Type: Name"
    arms: dict[str, str]  # label key -> label
    first_submitted: str | None


def _facts(study: Mapping[str, Any]) -> _Facts:
    tables = normalize_study(study)
    row = tables["studies"][0]
    results_date = row.get("results_first_posted_date") or ""
    interventions = {}
    for item in tables["interventions"]:
        kind = _enum(item.get("intervention_type")) or ""
        name = _clean_text(item.get("name"))
        if name:
            label = f"{_label(kind).capitalize()}: {name}" if kind else name
            interventions[(kind, name.casefold())] = label
    arms = {
        _key(item.get("label")): _clean_text(item.get("label"))
        for item in tables["arm_groups"]
        if _key(item.get("label"))
    }
    collaborators = {
        _key(s.get("name")): _clean_text(s.get("name"))
        for s in tables["sponsors"]
        if s.get("role") == "collaborator" and _key(s.get("name"))
    }
    return _Facts(
        title=_clean_text(row.get("brief_title")),
        status=_enum(row.get("overall_status")),
        why_stopped=_clean_text(row.get("why_stopped")),
        has_results=bool(row.get("has_results")) or bool(results_date),
        results_date=results_date,
        enrollment=row.get("enrollment_count"),
        enrollment_type=_enum(row.get("enrollment_type")),
        dates=tuple(
            (name, row.get(name), _enum(row.get(f"{name}_type")))
            for name in ("start_date", "primary_completion_date", "completion_date")
        ),
        phases=_phases(row.get("phases")),
        lead_sponsor=_key(row.get("lead_sponsor")),
        lead_sponsor_text=_clean_text(row.get("lead_sponsor")),
        collaborators=collaborators,
        interventions=interventions,
        arms=arms,
        first_submitted=row.get("first_submitted_date"),
    )


# -- screening and classification -----------------------------------------------------------
def _nct(study: Mapping[str, Any]) -> str:
    ident = (study.get("protocolSection") or {}).get("identificationModule") or {}
    value = ident.get("nctId")
    return value if isinstance(value, str) else ""


def _rule_evidence(evidence: Any, rule: str) -> str:
    """The evidence items of one rule (the one that settled a screening call), as text."""
    try:
        items = json.loads(evidence or "[]")
    except (TypeError, ValueError):
        return ""
    chosen = [i for i in items if isinstance(i, dict) and i.get("rule") == rule] or items[:1]
    return "; ".join(f"{i.get('field', '')}: {i.get('text', '')}" for i in chosen[:3])


def _values(classification: pd.DataFrame) -> dict[tuple[str, str], dict[str, str]]:
    """``(nct_id, variable) -> {value: evidence}`` of a long-form classification."""
    out: dict[tuple[str, str], dict[str, str]] = {}
    if classification is None or classification.empty:
        return out
    for nct, variable, value, field_, evidence in classification[
        ["nct_id", "variable", "value", "field", "evidence"]
    ].itertuples(index=False):
        if variable in SKIPPED_VARIABLES:
            continue
        text = f"{field_}: {evidence}" if evidence else str(field_ or "")
        out.setdefault((nct, variable), {})[str(value)] = text
    return out


@dataclass
class _Side:
    """One snapshot's landscape: its records, screening and classification."""

    studies: dict[str, dict]
    screening: pd.DataFrame
    classification: pd.DataFrame

    @property
    def included(self) -> set[str]:
        frame = self.screening
        return set(frame.loc[frame["decision"] == "included", "nct_id"])


def _landscape(
    studies: Iterable[dict],
    protocol: Any,
    overrides: Any,
    progress: ProgressCallback | None,
    label: str,
) -> _Side:
    from irtscope.trials._classify import classify_studies
    from irtscope.trials._screen import screen_studies

    by_id: dict[str, dict] = {}
    for study in studies:
        by_id.setdefault(_nct(study), study)
    records = list(by_id.values())
    if progress is not None:
        progress(0, len(records), f"Screening ({label})")
    screening = screen_studies(records, protocol, overrides=overrides)
    side = _Side(by_id, screening, pd.DataFrame())
    chosen = [by_id[n] for n in sorted(side.included) if n in by_id]
    if progress is not None:
        progress(0, len(chosen), f"Classifying ({label})")
    side.classification = (
        classify_studies(chosen, protocol, overrides=overrides) if chosen else pd.DataFrame()
    )
    return side


# -- the comparison ---------------------------------------------------------------------------
@dataclass
class SnapshotChanges:
    """The changes between two snapshots and what the report draws from them.

    ``frame`` has :data:`CHANGE_COLUMNS`, most consequential first; ``status_flows`` has
    ``from_status, to_status, n`` over the trials in the landscape at either snapshot
    (``not in landscape`` / ``left landscape`` for those that entered or left).
    """

    since: dict[str, Any]
    until: dict[str, Any]
    frame: pd.DataFrame
    status_flows: pd.DataFrame

    def records(self) -> list[Change]:
        """The rows as typed :class:`Change` records."""
        return [Change(**row) for row in self.frame.to_dict("records")]

    def counts(self) -> pd.DataFrame:
        """Per kind (all kinds, in consequence order): changes and distinct trials."""
        rows = []
        for kind, label in CHANGE_KINDS.items():
            part = self.frame[self.frame["kind"] == kind]
            rows.append(
                {
                    "kind": kind,
                    "label": label,
                    "changes": len(part),
                    "trials": part["nct_id"].nunique(),
                    "in_landscape": part.loc[
                        part["included_before"] | part["included_after"], "nct_id"
                    ].nunique(),
                }
            )
        return pd.DataFrame(rows, columns=["kind", "label", "changes", "trials", "in_landscape"])

    @property
    def label(self) -> str:
        """ "snapshot 1 (2020-07-28)"-style name of the earlier snapshot."""
        return _snapshot_label(self.since)


def _snapshot_label(row: Mapping[str, Any], default: str = "earlier snapshot") -> str:
    name = f"snapshot {row.get('snapshot_id')}" if row.get("snapshot_id") is not None else default
    day = row.get("data_date") or row.get("data_timestamp")
    return f"{name} ({day})" if day else name


def compare_snapshots(
    store: Any,
    protocol: Any = "nsclc-irt",
    since: int | str | None = None,
    until: int | str | None = None,
    overrides: Any = None,
    progress: ProgressCallback | None = None,
) -> SnapshotChanges:
    """Changes of the landscape from snapshot ``since`` to snapshot ``until`` of ``store``.

    Parameters
    ----------
    store
        An open :class:`~irtscope.trials.Store` with at least two snapshots.
    protocol
        Protocol name, YAML path or :class:`~irtscope.trials.Protocol` (screens both sides).
    since, until
        Snapshot id or date ``YYYY-MM-DD`` (see :func:`._asof.resolve_snapshot`); default
        ``until`` = the latest snapshot, ``since`` = the one before ``until``.
    overrides
        Reviewer overrides, applied to both sides (so an override is never a "change").

    Raises
    ------
    DataError
        Fewer than two snapshots, or ``since`` not older than ``until``.
    """
    until_id = resolve_snapshot(store, until)
    since_id = resolve_snapshot(store, since, before=until_id)
    if since_id >= until_id:
        raise DataError(
            f"--since (snapshot {since_id}) must be older than --until (snapshot {until_id})"
        )
    return compare_studies(
        iter_studies_as_of(store, since_id),
        iter_studies_as_of(store, until_id),
        protocol,
        overrides=overrides,
        since=snapshot_row(store, since_id),
        until=snapshot_row(store, until_id),
        progress=progress,
    )


@dataclass
class _Adder:
    """Appends :class:`Change` rows of one trial (its id, title and screening calls fixed)."""

    changes: list[Change]
    nct: str
    title: str
    before_in: bool
    after_in: bool

    def __call__(
        self, kind: str, field_: str, old_v: Any, new_v: Any, detail: str, **extra: Any
    ) -> None:
        self.changes.append(
            Change(
                nct_id=self.nct,
                title=self.title,
                kind=kind,
                field=field_,
                old="" if old_v is None else str(old_v),
                new="" if new_v is None else str(new_v),
                delta=extra.get("delta"),
                unit=extra.get("unit", ""),
                category=extra.get("category", ""),
                detail=detail,
                old_evidence=extra.get("old_evidence", ""),
                new_evidence=extra.get("new_evidence", ""),
                included_before=self.before_in,
                included_after=self.after_in,
                rank=_RANK[kind],
            )
        )


def compare_studies(
    before: Iterable[dict],
    after: Iterable[dict],
    protocol: Any = "nsclc-irt",
    overrides: Any = None,
    since: Mapping[str, Any] | None = None,
    until: Mapping[str, Any] | None = None,
    progress: ProgressCallback | None = None,
) -> SnapshotChanges:
    """Changes between two sets of raw API v2 records (the store-free core).

    ``since``/``until`` describe the two sides (rows of :func:`._asof.list_snapshots`); the
    earlier side's ``data_date`` tells a new registration from a trial the earlier snapshot
    simply did not hold.
    """
    from irtscope.trials._classify import _classifier
    from irtscope.trials._protocol import load_protocol
    from irtscope.trials._screen import compile_protocol

    proto = load_protocol(protocol)
    old = _landscape(before, proto, overrides, progress, "earlier snapshot")
    new = _landscape(after, proto, overrides, progress, "later snapshot")
    why_rx = _classifier(compile_protocol(proto)).why_rx
    since = dict(since or {})
    until = dict(until or {})

    def why_category(text: str) -> str:
        low = text.lower()
        return next((lab for lab, rx in why_rx if rx.search(low)), "other") if text else ""

    inc_old, inc_new = old.included, new.included
    old_screen = old.screening.set_index("nct_id")
    new_screen = new.screening.set_index("nct_id")
    old_values, new_values = _values(old.classification), _values(new.classification)
    changes: list[Change] = []
    facts_new = {n: _facts(s) for n, s in new.studies.items()}
    facts_old = {n: _facts(s) for n, s in old.studies.items()}

    for nct in sorted(set(old.studies) | set(new.studies)):
        a, b = facts_old.get(nct), facts_new.get(nct)
        title = (b or a).title if (b or a) else ""
        before_in, after_in = nct in inc_old, nct in inc_new

        add = _Adder(changes, nct, title, before_in, after_in)

        # entered / left the landscape
        if after_in and not before_in:
            if a is None:
                cutoff = since.get("data_date")
                registered = (b.first_submitted if b else None) or ""
                fresh = bool(cutoff and registered and registered[:10] > str(cutoff)[:10])
                how = "new_registration" if fresh else "not_in_earlier_snapshot"
                detail = (
                    f"new registration (first submitted {registered})"
                    if fresh
                    else "not in the earlier snapshot"
                    + (f" (first submitted {registered})" if registered else "")
                )
                add("entered", "screening", "", "included", detail, category=how)
            else:
                row = old_screen.loc[nct]
                add(
                    "entered",
                    "screening",
                    f"excluded: {row['reason_label']}",
                    "included",
                    f"now passes screening (was excluded: {row['reason_label']})",
                    category="now_passes",
                    old_evidence=_rule_evidence(row["evidence"], row["reason"]),
                )
        elif before_in and not after_in:
            if b is None:
                add(
                    "left",
                    "screening",
                    "included",
                    "",
                    "not in the later snapshot",
                    category="not_in_later_snapshot",
                )
            else:
                row = new_screen.loc[nct]
                add(
                    "left",
                    "screening",
                    "included",
                    f"excluded: {row['reason_label']}",
                    f"now excluded: {row['reason_label']}",
                    category=str(row["reason"]),
                    new_evidence=_rule_evidence(row["evidence"], row["reason"]),
                )
        elif (
            before_in and after_in and b and b.status == "WITHDRAWN" and a and a.status != b.status
        ):
            add(
                "left",
                "overall_status",
                _label(a.status),
                "withdrawn",
                "withdrawn before enrolling (the screening still lists it)",
                category="withdrawn",
                new_evidence=b.why_stopped,
            )
        if a is None or b is None:
            continue

        # status
        if a.status != b.status:
            why = b.why_stopped if b.status in _STOPPED else ""
            detail = f"{_label(a.status) or 'none'} -> {_label(b.status) or 'none'}"
            if why:
                detail += f" (why stopped: {why})"
            add(
                "status",
                "overall_status",
                _label(a.status),
                _label(b.status),
                detail,
                category=why_category(why),
                new_evidence=why,
            )
        # results
        if b.has_results and not a.has_results:
            when = b.results_date or "date not given"
            add("results_posted", "results_first_posted_date", "", when, f"results posted {when}")
        # enrollment
        if a.enrollment != b.enrollment or a.enrollment_type != b.enrollment_type:
            delta = (
                float(b.enrollment - a.enrollment)
                if a.enrollment is not None and b.enrollment is not None
                else None
            )
            kinds = (_enrollment_kind(a.enrollment_type), _enrollment_kind(b.enrollment_type))
            detail = f"{_enrollment_text(a)} -> {_enrollment_text(b)}"
            if delta is not None:
                detail += f" ({delta:+.0f})"
            add(
                "enrollment",
                "enrollment_count",
                _enrollment_text(a),
                _enrollment_text(b),
                detail,
                delta=delta,
                unit="participants" if delta is not None else "",
                category=f"{kinds[0]}->{kinds[1]}" if kinds[0] != kinds[1] else "",
            )
        # dates
        for (name, old_d, _ot), (_n, new_d, new_t) in zip(a.dates, b.dates, strict=True):
            kind = "start_date" if name == "start_date" else "completion_date"
            if not old_d and not new_d:
                continue
            moved = _date_moved(old_d, new_d)
            if moved is None and bool(old_d) == bool(new_d):
                continue
            what = name.replace("_", " ")
            if moved is None:
                detail = (
                    f"{what} {'given' if new_d else 'removed'}: {old_d or '-'} -> {new_d or '-'}"
                )
            else:
                detail = f"{what} moved {moved:+.1f} months: {old_d} -> {new_d}"
                if new_t:
                    detail += f" ({_enrollment_kind(new_t)})"
            add(kind, name, old_d, new_d, detail, delta=moved, unit="months" if moved else "")
        # phase, sponsor, interventions, arms
        if a.phases != b.phases:
            old_p, new_p = _phase_label(a.phases), _phase_label(b.phases)
            add("phase", "phases", old_p, new_p, f"phase {old_p or '-'} -> {new_p or '-'}")
        if a.lead_sponsor != b.lead_sponsor:
            add(
                "sponsor",
                "lead_sponsor",
                a.lead_sponsor_text,
                b.lead_sponsor_text,
                f"lead sponsor {a.lead_sponsor_text or '-'} -> {b.lead_sponsor_text or '-'}",
            )
        if set(a.collaborators) != set(b.collaborators):
            gained = [
                b.collaborators[k] for k in sorted(set(b.collaborators) - set(a.collaborators))
            ]
            lost = [a.collaborators[k] for k in sorted(set(a.collaborators) - set(b.collaborators))]
            add(
                "sponsor",
                "collaborators",
                "; ".join(a.collaborators[k] for k in sorted(a.collaborators)),
                "; ".join(b.collaborators[k] for k in sorted(b.collaborators)),
                _diff_text(gained, lost, "collaborator"),
            )
        if set(a.interventions) != set(b.interventions):
            gained = [
                b.interventions[k] for k in sorted(set(b.interventions) - set(a.interventions))
            ]
            lost = [a.interventions[k] for k in sorted(set(a.interventions) - set(b.interventions))]
            add(
                "interventions",
                "interventions",
                "; ".join(a.interventions[k] for k in sorted(a.interventions)),
                "; ".join(b.interventions[k] for k in sorted(b.interventions)),
                _diff_text(gained, lost, "intervention"),
            )
        if set(a.arms) != set(b.arms):
            gained = [b.arms[k] for k in sorted(set(b.arms) - set(a.arms))]
            lost = [a.arms[k] for k in sorted(set(a.arms) - set(b.arms))]
            add(
                "arms",
                "arm_groups",
                "; ".join(a.arms[k] for k in sorted(a.arms)),
                "; ".join(b.arms[k] for k in sorted(b.arms)),
                _diff_text(gained, lost, "arm"),
            )
        # classification values (trials classified at both snapshots)
        if before_in and after_in:
            variables = {v for (n, v) in old_values if n == nct} | {
                v for (n, v) in new_values if n == nct
            }
            for variable in sorted(variables):
                was = old_values.get((nct, variable), {})
                now = new_values.get((nct, variable), {})
                if set(was) == set(now):
                    continue
                gained, lost = sorted(set(now) - set(was)), sorted(set(was) - set(now))
                add(
                    "classification",
                    variable,
                    "; ".join(sorted(was)),
                    "; ".join(sorted(now)),
                    f"{variable}: " + _diff_text(gained, lost, "value"),
                    old_evidence=" | ".join(was[v] for v in lost),
                    new_evidence=" | ".join(now[v] for v in gained),
                )

    frame = pd.DataFrame([asdict(c) for c in changes], columns=list(CHANGE_COLUMNS))
    frame["delta"] = frame["delta"].astype("float64")
    for column in ("included_before", "included_after"):
        frame[column] = frame[column].astype(bool)
    frame["rank"] = frame["rank"].astype("int64")
    frame = _order(frame)
    flows = _status_flows(old, new, facts_old, facts_new)
    return SnapshotChanges(since=since, until=until, frame=frame, status_flows=flows)


def _enrollment_kind(code: str | None) -> str:
    return {"ESTIMATED": "anticipated", "ACTUAL": "actual"}.get(code or "", _label(code) or "?")


def _enrollment_text(facts: _Facts) -> str:
    count = "-" if facts.enrollment is None else str(facts.enrollment)
    return f"{_enrollment_kind(facts.enrollment_type)} {count}"


def _diff_text(gained: list[str], lost: list[str], noun: str) -> str:
    """ "added A, B; removed C" (words, not +/-: a cell starting with a sign reads as a formula)."""
    parts = []
    if gained:
        parts.append("added " + ", ".join(gained))
    if lost:
        parts.append("removed " + ", ".join(lost))
    return "; ".join(parts) if parts else f"{noun}s changed"


def _order(frame: pd.DataFrame) -> pd.DataFrame:
    """Trials with the most consequential change first; within a trial, by kind.

    A trial's weight is its most consequential kind, then how many changes it has, so a
    terminated trial that also posted results comes before one that only moved a date.
    """
    if frame.empty:
        return frame.reset_index(drop=True)
    per_trial = frame.groupby("nct_id").agg(first=("rank", "min"), n=("rank", "size"))
    order = per_trial.sort_values(["first", "n"], ascending=[True, False], kind="stable")
    position = {nct: i for i, nct in enumerate(order.index)}
    return (
        frame.assign(_trial=frame["nct_id"].map(position))
        .sort_values(["_trial", "rank", "field"], kind="stable")
        .drop(columns="_trial")
        .reset_index(drop=True)
    )


def _status_flows(
    old: _Side, new: _Side, facts_old: dict[str, _Facts], facts_new: dict[str, _Facts]
) -> pd.DataFrame:
    """From -> to status counts over the trials in the landscape at either snapshot."""
    rows: dict[tuple[str, str], int] = {}
    for nct in sorted(old.included | new.included):
        a = facts_old.get(nct) if nct in old.included else None
        b = facts_new.get(nct) if nct in new.included else None
        src = (_label(a.status) or "not reported") if a else "not in landscape"
        dst = (_label(b.status) or "not reported") if b else "left landscape"
        rows[(src, dst)] = rows.get((src, dst), 0) + 1
    frame = pd.DataFrame(
        [(s, d, n) for (s, d), n in rows.items()], columns=["from_status", "to_status", "n"]
    )
    return frame.sort_values(
        ["n", "from_status"], ascending=[False, True], kind="stable"
    ).reset_index(drop=True)


# -- figure ------------------------------------------------------------------------------------
def status_flow_text(flows: pd.DataFrame, since_label: str, until_label: str, k: int = 8) -> str:
    """A text alternative for :func:`status_flow_figure` (the largest flows, in words)."""
    if flows.empty:
        return f"No trials in the landscape at {since_label} or {until_label}."
    total = int(flows["n"].sum())
    moved = flows[flows["from_status"] != flows["to_status"]]
    parts = [f"{r.n} {r.from_status} -> {r.to_status}" for r in moved.head(k).itertuples()]
    same = total - int(moved["n"].sum())
    text = (
        f"Status of {total} landscape trials at {since_label} (left bar) and {until_label} "
        f"(right bar); {same} kept their status"
    )
    return text + (": " + "; ".join(parts) + "." if parts else ".")


#: Bar order of the flow figure, bottom to top: the life of a trial, then the way out.
_FLOW_ORDER = (
    "not in landscape",
    "not yet recruiting",
    "recruiting",
    "enrolling by invitation",
    "active not recruiting",
    "suspended",
    "completed",
    "terminated",
    "withdrawn",
    "unknown",
    "not reported",
    "left landscape",
)


def status_flow_figure(flows: pd.DataFrame, since_label: str, until_label: str) -> Any:
    """Alluvial chart of status flows: two stacked bars joined by bands, one per flow.

    Why an alluvial and not two bar charts: the question is where the recruiting trials of
    the earlier snapshot went (completed? terminated?), which only the bands show.
    """
    import numpy as np
    from matplotlib.figure import Figure
    from matplotlib.patches import PathPatch
    from matplotlib.path import Path as MplPath

    fig = Figure(figsize=(8, 5), layout="constrained")
    ax = fig.subplots()
    if flows.empty:
        ax.text(0.5, 0.5, "No trials to compare", ha="center", va="center", transform=ax.transAxes)
        ax.set_axis_off()
        return fig
    palette = [
        "#2a6f97", "#e07a5f", "#81b29a", "#f2cc8f", "#6d597a", "#3d405b", "#b56576",
        "#999999", "#5fa8d3", "#c9ada7", "#588157",
    ]  # fmt: skip
    present = set(flows["from_status"]) | set(flows["to_status"])
    statuses = [s for s in _FLOW_ORDER if s in present] + sorted(present - set(_FLOW_ORDER))
    colour = {s: palette[i % len(palette)] for i, s in enumerate(statuses)}
    left = flows.groupby("from_status")["n"].sum().reindex(statuses).dropna()
    right = flows.groupby("to_status")["n"].sum().reindex(statuses).dropna()
    gap = max(1.0, 0.02 * float(flows["n"].sum()))
    width = 0.08

    def stack(totals: pd.Series) -> dict[str, float]:
        bottoms, y = {}, 0.0
        for status, n in totals.items():
            bottoms[status] = y
            y += float(n) + gap
        return bottoms

    lb, rb = stack(left), stack(right)
    lcur, rcur = dict(lb), dict(rb)
    for status, n in left.items():
        ax.bar(0, n, width, bottom=lb[status], color=colour[status], edgecolor="white")
        ax.text(
            -width, lb[status] + n / 2, f"{status} ({int(n)})", ha="right", va="center", fontsize=8
        )
    for status, n in right.items():
        ax.bar(1, n, width, bottom=rb[status], color=colour[status], edgecolor="white")
        ax.text(
            1 + width,
            rb[status] + n / 2,
            f"{status} ({int(n)})",
            ha="left",
            va="center",
            fontsize=8,
        )
    position = {s: i for i, s in enumerate(statuses)}
    ordered = flows.assign(
        _a=flows["from_status"].map(position), _b=flows["to_status"].map(position)
    ).sort_values(["_a", "_b"], kind="stable")
    x0, x1 = width / 2, 1 - width / 2
    for row in ordered.itertuples():
        n = float(row.n)
        y0, y1 = lcur[row.from_status], rcur[row.to_status]
        lcur[row.from_status] += n
        rcur[row.to_status] += n
        mid = (x0 + x1) / 2
        verts = [
            (x0, y0), (mid, y0), (mid, y1), (x1, y1),
            (x1, y1 + n), (mid, y1 + n), (mid, y0 + n), (x0, y0 + n), (x0, y0),
        ]  # fmt: skip
        codes = [MplPath.MOVETO, *[MplPath.CURVE4] * 3, MplPath.LINETO, *[MplPath.CURVE4] * 3]
        codes.append(MplPath.CLOSEPOLY)
        band = PathPatch(MplPath(np.array(verts), codes), facecolor=colour[row.from_status],
                         alpha=0.35, edgecolor="none")  # fmt: skip
        ax.add_patch(band)
    ax.set_xlim(-0.9, 1.9)
    ax.set_xticks([0, 1], [since_label, until_label])
    ax.set_yticks([])
    for side in ("top", "right", "left"):
        ax.spines[side].set_visible(False)
    ax.set_title("Status of the landscape's trials: where each one went", fontsize=10)
    return fig


# -- report section -----------------------------------------------------------------------------
#: Rows of the changes table shown in the HTML report (all of them are in tables/changes.*).
REPORT_ROWS = 100


def report_section(
    changes: SnapshotChanges, out_dir: Any, clean: Callable[[pd.DataFrame], pd.DataFrame]
) -> tuple[dict[str, Any], Any, Any]:
    """Write ``tables/changes.*`` and ``figures/status_flows.*``; return the template context.

    ``clean`` is the report's cell cleaner (control characters, Excel's cell limit), so this
    table is written exactly like the report's others. Landscape trials come first in the
    HTML table (the section is about the landscape); the files keep every change.
    """
    from pathlib import Path

    from irtscope.report import save_figure, write_table

    out = Path(out_dir)
    table = write_table(clean(changes.frame), out / "tables", "changes")
    since_label = _snapshot_label(changes.since)
    until_label = _snapshot_label(changes.until, "later snapshot")
    fig = status_flow_figure(changes.status_flows, since_label, until_label)
    figure = save_figure(fig, out / "figures", "status_flows")
    frame = changes.frame
    in_landscape = frame["included_before"] | frame["included_after"]
    shown = pd.concat([frame[in_landscape], frame[~in_landscape]]).head(REPORT_ROWS)
    counts = changes.counts()
    rows = [
        {
            "nct_id": r.nct_id,
            "title": r.title,
            "kind": CHANGE_KINDS[r.kind],
            "detail": r.detail,
            "category": r.category,
            "old_evidence": _short(r.old_evidence),
            "new_evidence": _short(r.new_evidence),
            "landscape": _membership(r.included_before, r.included_after),
        }
        for r in shown.itertuples(index=False)
    ]
    context = {
        "since_label": since_label,
        "until_label": until_label,
        "since": _row_text(changes.since),
        "until": _row_text(changes.until),
        "counts": counts[counts["changes"] > 0].to_dict("records"),
        "n_changes": len(frame),
        "n_trials": int(frame["nct_id"].nunique()),
        "rows": rows,
        "n_hidden": max(0, len(frame) - len(rows)),
        "figure": figure.data_uri,
        "alt": status_flow_text(changes.status_flows, since_label, until_label),
        "flows": changes.status_flows.to_dict("records"),
    }
    return context, table, figure


def _row_text(row: Mapping[str, Any]) -> dict[str, str]:
    """A snapshot row as text, every :data:`._asof.SNAPSHOT_COLUMNS` key present."""
    from irtscope.trials._asof import SNAPSHOT_COLUMNS

    keys = dict.fromkeys((*SNAPSHOT_COLUMNS, *row))
    return {k: "" if row.get(k) is None else str(row.get(k)) for k in keys}


def _short(text: str, limit: int = 200) -> str:
    text = text or ""
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _membership(before: bool, after: bool) -> str:
    return {
        (True, True): "in both",
        (False, True): "entered",
        (True, False): "left",
        (False, False): "not in the landscape",
    }[(bool(before), bool(after))]
