"""Raw API v2 study dict -> rows of the normalized store tables.

The raw study JSON stays the unit of truth (screening reads it); these rows exist so that
counts, filters and joins run in SQL. Every function here is pure: a dict in, plain Python
values out, so the same code serves the JSON, CSV and API sources.

A *version* of a study is identified by a hash of the bytes the store keeps of it: the
record as written, minified if it was pretty-printed. That costs nothing beyond the one C
parse an import needs anyway, where re-serialising a parsed dict with sorted keys meant
building the record's whole Python object tree, more than half of import time. Two writings
of one version (Python's ``\\u`` escapes, another key order, ``", "`` separators) hash
differently, so when a study is already stored under another id the store compares the
parsed JSON values before calling the record a new version (``_batch.ContentMatcher``).
Which of two versions is *newer* is decided by
``lastUpdatePostDateStruct.date``, then ``derivedSection.miscInfoModule.versionHolder`` (the
registry's own export date), then the order of arrival.
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Mapping
from typing import Any

import msgspec
import orjson
import xxhash

_NCT_RE = re.compile(r"^NCT\d{8}$")

#: Normalized tables and their columns (besides ``nct_id, version, snapshot_id``), in order.
TABLE_COLUMNS: dict[str, tuple[str, ...]] = {
    "studies": (
        "brief_title",
        "official_title",
        "acronym",
        "org_study_id",
        "organization",
        "organization_class",
        "overall_status",
        "last_known_status",
        "why_stopped",
        "has_results",
        "status_verified_date",
        "start_date",
        "start_date_precision",
        "start_date_type",
        "start_date_value",
        "primary_completion_date",
        "primary_completion_date_precision",
        "primary_completion_date_type",
        "completion_date",
        "completion_date_precision",
        "completion_date_type",
        "first_submitted_date",
        "first_submitted_qc_date",
        "first_posted_date",
        "first_posted_date_type",
        "results_first_posted_date",
        "last_update_posted_date",
        "last_update_posted_date_type",
        "study_type",
        "phases",
        "enrollment_count",
        "enrollment_type",
        "allocation",
        "intervention_model",
        "masking",
        "who_masked",
        "primary_purpose",
        "has_dmc",
        "sex",
        "minimum_age",
        "maximum_age",
        "age_groups",
        "healthy_volunteers",
        "lead_sponsor",
        "lead_sponsor_class",
        "n_locations",
    ),
    "sponsors": ("position", "role", "name", "sponsor_class"),
    "conditions": ("position", "condition"),
    "keywords": ("position", "keyword"),
    "interventions": (
        "position",
        "intervention_type",
        "name",
        "description",
        "other_names",
        "arm_group_labels",
    ),
    "arm_groups": ("position", "label", "arm_type", "description", "intervention_names"),
    "locations": ("position", "facility", "city", "state", "zip", "country", "status"),
    "secondary_ids": ("position", "secondary_id", "id_type", "domain"),
    "aliases": ("alias",),
}

#: Columns holding lists of strings (DuckDB ``VARCHAR[]``).
LIST_COLUMNS = frozenset(
    {"phases", "who_masked", "age_groups", "other_names", "arm_group_labels", "intervention_names"}
)
INT_COLUMNS = frozenset({"enrollment_count", "n_locations", "position"})
BOOL_COLUMNS = frozenset({"has_results", "has_dmc", "healthy_volunteers"})
DATE_COLUMNS = frozenset({"start_date_value"})


def _get(mapping: Any, *keys: str) -> Any:
    """Nested ``dict.get`` that tolerates missing modules (records are often partial)."""
    for key in keys:
        if not isinstance(mapping, dict):
            return None
        mapping = mapping.get(key)
    return mapping


def nct_id_of(study: Any) -> str | None:
    """The study's NCT id, or ``None`` when the record has none (or is not a dict)."""
    value = _get(study, "protocolSection", "identificationModule", "nctId")
    return value if isinstance(value, str) and value else None


def is_valid_nct_id(value: str | None) -> bool:
    return bool(value) and bool(_NCT_RE.match(value or ""))


def canonical_json(study: Mapping[str, Any]) -> bytes:
    """Canonical bytes of a study that a source built as a dict (CSV rows, callers' dicts).

    orjson writes compact JSON, so these bytes are already what :func:`canonical_bytes`
    would make of them.
    """
    return orjson.dumps(study)


def canonical_bytes(raw: bytes) -> bytes:
    """The bytes the store keeps of a record: as written, minified if pretty-printed.

    A record without a line break is kept exactly as written (JSON strings cannot hold a
    raw line break, so such a record has no indentation to remove); a pretty-printed one
    (bulk zip members) loses its whitespace. Whether two writings are the same version is
    decided by comparing JSON values (see the module docstring), so this form only has to
    be cheap and deterministic; checking the JSON is left to the one parse that follows.

    UTF-8 is checked later, for a whole batch at once (``_batch.Batch.drop_invalid_utf8``).

    Raises
    ------
    msgspec.DecodeError
        When a pretty-printed ``raw`` is not well-formed JSON.
    """
    raw = raw.strip()
    if b"\n" in raw:
        raw = msgspec.json.format(raw, indent=-1)
    return raw


def content_hash(canonical: bytes) -> str:
    """Stable identifier of one version of a record: XXH3-128 of its kept bytes.

    A version id only has to tell apart the versions of one study (a handful) and never
    collide by accident; it is not a defence against forged records. XXH3 does that at a
    tenth of SHA-256's cost, which was an eighth of import time (see ``benchmarks/ingest.py``).
    """
    return xxhash.xxh3_128_hexdigest(canonical)


def version_info(study: Mapping[str, Any]) -> tuple[str | None, str | None]:
    """``(last_update_posted, version_holder)``: the fields that order versions in time."""
    last_update = _get(study, "protocolSection", "statusModule", "lastUpdatePostDateStruct", "date")
    holder = _get(study, "derivedSection", "miscInfoModule", "versionHolder")
    return (
        last_update if isinstance(last_update, str) else None,
        holder if isinstance(holder, str) else None,
    )


def aliases_of(study: Mapping[str, Any]) -> list[str]:
    value = _get(study, "protocolSection", "identificationModule", "nctIdAliases")
    return [a for a in value if isinstance(a, str) and a] if isinstance(value, list) else []


def parse_partial_date(value: Any) -> tuple[str | None, str | None, dt.date | None]:
    """Registry dates come as ``yyyy``, ``yyyy-mm`` or ``yyyy-mm-dd``.

    Returns the text as given, its precision, and the first day of the period it names (so
    SQL can compare dates while the precision says how much to trust the day/month).
    Unparseable text keeps its value with precision ``None``.
    """
    if not isinstance(value, str) or not value.strip():
        return None, None, None
    text = value.strip()
    parts = text.split("-")
    try:
        if len(parts) == 1 and len(parts[0]) == 4:
            return text, "yyyy", dt.date(int(parts[0]), 1, 1)
        if len(parts) == 2:
            return text, "yyyy-mm", dt.date(int(parts[0]), int(parts[1]), 1)
        if len(parts) == 3:
            return text, "yyyy-mm-dd", dt.date(int(parts[0]), int(parts[1]), int(parts[2]))
    except ValueError:
        pass
    return text, None, None


def _str_list(value: Any) -> list[str] | None:
    if not isinstance(value, list):
        return None
    return [str(v) for v in value if v is not None]


def _as_int(value: Any) -> int | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, str) and value.strip().lstrip("-").isdigit():
        return int(value.strip())
    return None


def _as_bool(value: Any) -> bool | None:
    return value if isinstance(value, bool) else None


def _text(value: Any) -> str | None:
    return value if isinstance(value, str) else None


def normalize_study(study: Mapping[str, Any]) -> dict[str, list[dict[str, Any]]]:
    """Rows (without ``nct_id``/``version``/``snapshot_id``) for every normalized table.

    Missing modules give ``None`` columns or no child rows; nothing here raises on a partial
    record, because partial records are normal in the registry. This is the readable form of
    :func:`normalize_rows` (dicts keyed by column), for tests and callers outside the store.
    """
    return {
        table: [dict(zip(TABLE_COLUMNS[table], row, strict=True)) for row in rows]
        for table, rows in normalize_rows(study).items()
    }


_STUDY_COLUMNS = TABLE_COLUMNS["studies"]


def normalize_rows(study: Mapping[str, Any]) -> dict[str, list[tuple[Any, ...]]]:
    """Rows of every normalized table as tuples in :data:`TABLE_COLUMNS` order.

    The store's import path: tuples transpose into column lists with one ``zip`` per table
    and batch, where per-row dicts cost a key lookup per cell (a fifth of import time).
    Every value is computed before anything is returned, so a record that raises here
    (a module of the wrong type) leaves no partial rows behind.
    """
    ps = study.get("protocolSection") or {}
    ident = ps.get("identificationModule") or {}
    status = ps.get("statusModule") or {}
    sponsor_mod = ps.get("sponsorCollaboratorsModule") or {}
    cond_mod = ps.get("conditionsModule") or {}
    design = ps.get("designModule") or {}
    design_info = design.get("designInfo") or {}
    elig = ps.get("eligibilityModule") or {}
    arms_mod = ps.get("armsInterventionsModule") or {}
    contacts = ps.get("contactsLocationsModule") or {}
    lead = sponsor_mod.get("leadSponsor") or {}
    locations = contacts.get("locations") or []

    row: dict[str, Any] = {
        "brief_title": _text(ident.get("briefTitle")),
        "official_title": _text(ident.get("officialTitle")),
        "acronym": _text(ident.get("acronym")),
        "org_study_id": _text(_get(ident, "orgStudyIdInfo", "id")),
        "organization": _text(_get(ident, "organization", "fullName")),
        "organization_class": _text(_get(ident, "organization", "class")),
        "overall_status": _text(status.get("overallStatus")),
        "last_known_status": _text(status.get("lastKnownStatus")),
        "why_stopped": _text(status.get("whyStopped")),
        "has_results": _as_bool(study.get("hasResults")),
        "status_verified_date": _text(status.get("statusVerifiedDate")),
        "first_submitted_date": _text(status.get("studyFirstSubmitDate")),
        "first_submitted_qc_date": _text(status.get("studyFirstSubmitQcDate")),
        "first_posted_date": _text(_get(status, "studyFirstPostDateStruct", "date")),
        "first_posted_date_type": _text(_get(status, "studyFirstPostDateStruct", "type")),
        "results_first_posted_date": _text(_get(status, "resultsFirstPostDateStruct", "date")),
        "last_update_posted_date": _text(_get(status, "lastUpdatePostDateStruct", "date")),
        "last_update_posted_date_type": _text(_get(status, "lastUpdatePostDateStruct", "type")),
        "study_type": _text(design.get("studyType")),
        "phases": _str_list(design.get("phases")),
        "enrollment_count": _as_int(_get(design, "enrollmentInfo", "count")),
        "enrollment_type": _text(_get(design, "enrollmentInfo", "type")),
        "allocation": _text(design_info.get("allocation")),
        "intervention_model": _text(design_info.get("interventionModel")),
        "masking": _text(_get(design_info, "maskingInfo", "masking")),
        "who_masked": _str_list(_get(design_info, "maskingInfo", "whoMasked")),
        "primary_purpose": _text(design_info.get("primaryPurpose")),
        "has_dmc": _as_bool(_get(ps, "oversightModule", "oversightHasDmc")),
        "sex": _text(elig.get("sex")),
        "minimum_age": _text(elig.get("minimumAge")),
        "maximum_age": _text(elig.get("maximumAge")),
        "age_groups": _str_list(elig.get("stdAges")),
        "healthy_volunteers": _as_bool(elig.get("healthyVolunteers")),
        "lead_sponsor": _text(lead.get("name")),
        "lead_sponsor_class": _text(lead.get("class")),
        "n_locations": len(locations) if isinstance(locations, list) else 0,
    }
    for prefix, key in (
        ("start_date", "startDateStruct"),
        ("primary_completion_date", "primaryCompletionDateStruct"),
        ("completion_date", "completionDateStruct"),
    ):
        struct = status.get(key) or {}
        text, precision, first_day = parse_partial_date(struct.get("date"))
        row[prefix] = text
        row[f"{prefix}_precision"] = precision
        row[f"{prefix}_type"] = _text(struct.get("type"))
        if prefix == "start_date":
            row["start_date_value"] = first_day

    sponsors = []
    # a lead sponsor row when the registry names one (or its class), not for an empty object
    if isinstance(lead, dict) and (lead.get("name") is not None or lead.get("class") is not None):
        sponsors.append((0, "lead", _text(lead.get("name")), _text(lead.get("class"))))
    for i, collab in enumerate(sponsor_mod.get("collaborators") or [], start=1):
        if isinstance(collab, dict):
            sponsors.append(
                (i, "collaborator", _text(collab.get("name")), _text(collab.get("class")))
            )

    interventions = [
        (
            i,
            _text(item.get("type")),
            _text(item.get("name")),
            _text(item.get("description")),
            _str_list(item.get("otherNames")),
            _str_list(item.get("armGroupLabels")),
        )
        for i, item in enumerate(arms_mod.get("interventions") or [])
        if isinstance(item, dict)
    ]
    arm_groups = [
        (
            i,
            _text(item.get("label")),
            _text(item.get("type")),
            _text(item.get("description")),
            _str_list(item.get("interventionNames")),
        )
        for i, item in enumerate(arms_mod.get("armGroups") or [])
        if isinstance(item, dict)
    ]
    location_rows = [
        (
            i,
            _text(item.get("facility")),
            _text(item.get("city")),
            _text(item.get("state")),
            _text(item.get("zip")),
            _text(item.get("country")),
            _text(item.get("status")),
        )
        for i, item in enumerate(locations if isinstance(locations, list) else [])
        if isinstance(item, dict)
    ]
    secondary = [
        (i, _text(item.get("id")), _text(item.get("type")), _text(item.get("domain")))
        for i, item in enumerate(ident.get("secondaryIdInfos") or [])
        if isinstance(item, dict)
    ]
    return {
        "studies": [tuple(map(row.__getitem__, _STUDY_COLUMNS))],
        "sponsors": sponsors,
        "conditions": [
            (i, c) for i, c in enumerate(cond_mod.get("conditions") or []) if isinstance(c, str)
        ],
        "keywords": [
            (i, k) for i, k in enumerate(cond_mod.get("keywords") or []) if isinstance(k, str)
        ],
        "interventions": interventions,
        "arm_groups": arm_groups,
        "locations": location_rows,
        "secondary_ids": secondary,
        "aliases": [(a,) for a in aliases_of(study)],
    }
