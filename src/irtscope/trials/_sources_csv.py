"""The registry's CSV download <-> API v2-shaped study dicts.

ClinicalTrials.gov's "Download CSV" (and ``/studies?format=csv``) writes one row per study
with the header ``NCT Number,Study Title,Study URL,Acronym,Study Status,...`` (30 columns);
the reference study exported this. :func:`csv_row_to_study` maps a row onto the API v2 shape
(only the fields the CSV carries), so screening, classification and the store treat CSV and
JSON records alike. :func:`studies_to_registry_csv` writes the same layout from API records
(used by tests to check the round trip, and handy to hand a table to a reviewer).

Lossy spots of the CSV itself, not of this mapping: lists are joined with ``|`` and a
location is ``facility, city, state, zip, country`` with empty parts dropped, so a facility
name containing ", " cannot always be told from the city; date types (actual/estimated),
intervention other-names, arm groups, keywords, why-stopped, the DMC flag and age limits are
not in the CSV at all.
"""

from __future__ import annotations

import contextlib
import csv
import re
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import IO, Any

from irtscope.trials._normalize import _get
from irtscope.trials._sources_files import RawRecord

CSV_COLUMNS: tuple[str, ...] = (
    "NCT Number",
    "Study Title",
    "Study URL",
    "Acronym",
    "Study Status",
    "Brief Summary",
    "Study Results",
    "Conditions",
    "Interventions",
    "Primary Outcome Measures",
    "Secondary Outcome Measures",
    "Other Outcome Measures",
    "Sponsor",
    "Collaborators",
    "Sex",
    "Age",
    "Phases",
    "Enrollment",
    "Funder Type",
    "Study Type",
    "Study Design",
    "Other IDs",
    "Start Date",
    "Primary Completion Date",
    "Completion Date",
    "First Posted",
    "Results First Posted",
    "Last Update Posted",
    "Locations",
    "Study Documents",
)

_DESIGN_FIELDS = (
    ("Allocation", "allocation"),
    ("Intervention Model", "interventionModel"),
    ("Masking", "masking"),
    ("Primary Purpose", "primaryPurpose"),
    ("Observational Model", "observationalModel"),
    ("Time Perspective", "timePerspective"),
)
_ENUM_PREFIX = re.compile(r"^([A-Z][A-Z_]*):(?: (.*))?$", re.DOTALL)
_MASKING = re.compile(r"^([A-Z_]+)(?: \((.*)\))?$")
_ZIP = re.compile(r"^(?=.*\d)[A-Za-z0-9][A-Za-z0-9 \-]{1,11}$")
_COUNTRY_TAIL = re.compile(
    r"^(?:(?:Islamic |United |Bolivarian |Democratic People's |The Former Yugoslav )?Republic of"
    r"|The Democratic Republic of the|Plurinational State of|Federated States of"
    r"|Province of China|Occupied|U\.S\.|British)$"
)
_OUTCOME_KEYS = (
    ("Primary Outcome Measures", "primaryOutcomes"),
    ("Secondary Outcome Measures", "secondaryOutcomes"),
    ("Other Outcome Measures", "otherOutcomes"),
)
_DATE_KEYS = (
    ("Start Date", "startDateStruct"),
    ("Primary Completion Date", "primaryCompletionDateStruct"),
    ("Completion Date", "completionDateStruct"),
    ("First Posted", "studyFirstPostDateStruct"),
    ("Results First Posted", "resultsFirstPostDateStruct"),
    ("Last Update Posted", "lastUpdatePostDateStruct"),
)


def _split(value: str | None) -> list[str]:
    return [part.strip() for part in (value or "").split("|") if part.strip()]


def _clean(value: str | None) -> str | None:
    value = (value or "").strip()
    return value or None


def parse_location(text: str) -> dict[str, str]:
    """``facility, city, state, zip, country`` (empty parts dropped) -> a location dict.

    Country is the last part; a part with a digit before it is the zip; of what remains,
    three or more parts are ``facility..., city, state``, two are ``facility, city``, one is
    the city. On the shared records this recovers 93% of locations exactly (a state with two
    parts left, or a facility name containing ", ", is the CSV's inherent ambiguity; the
    country is always right unless a name contains "|").
    """
    # Split on ", " only and keep inner whitespace, so a facility rejoins byte for byte.
    parts = [p for p in text.split(", ") if p.strip()]
    out: dict[str, str] = {}
    if not parts:
        return out
    out["country"] = parts.pop()
    if parts and _COUNTRY_TAIL.match(out["country"]):
        # ISO-style names with a comma: "Korea, Republic of", "Iran, Islamic Republic of"
        out["country"] = f"{parts.pop()}, {out['country']}"
    if parts and _ZIP.match(parts[-1]):
        out["zip"] = parts.pop()
    if len(parts) >= 3:
        out["state"] = parts.pop()
        out["city"] = parts.pop()
        out["facility"] = ", ".join(parts)
    elif len(parts) == 2:
        out["city"] = parts.pop()
        out["facility"] = parts.pop()
    elif parts:
        out["city"] = parts.pop()
    return {key: value.strip() for key, value in out.items()}


def csv_row_to_study(row: dict[str, str]) -> dict[str, Any]:
    """One CSV row -> an API v2-shaped study dict carrying only the CSV's fields."""
    nct = _clean(row.get("NCT Number"))
    ident: dict[str, Any] = {"nctId": nct}
    if title := _clean(row.get("Study Title")):
        ident["briefTitle"] = title
    if acronym := _clean(row.get("Acronym")):
        ident["acronym"] = acronym
    other_ids = _split(row.get("Other IDs"))
    if other_ids:
        ident["orgStudyIdInfo"] = {"id": other_ids[0]}
        if other_ids[1:]:
            ident["secondaryIdInfos"] = [{"id": i} for i in other_ids[1:]]

    status: dict[str, Any] = {}
    if overall := _clean(row.get("Study Status")):
        status["overallStatus"] = overall
    for column, key in _DATE_KEYS:
        if date := _clean(row.get(column)):
            status[key] = {"date": date}

    sponsor: dict[str, Any] = {}
    if lead := _clean(row.get("Sponsor")):
        sponsor["leadSponsor"] = {"name": lead}
        if funder := _clean(row.get("Funder Type")):
            sponsor["leadSponsor"]["class"] = _split(funder)[0]
    if collaborators := _split(row.get("Collaborators")):
        sponsor["collaborators"] = [{"name": c} for c in collaborators]

    design: dict[str, Any] = {}
    if study_type := _clean(row.get("Study Type")):
        design["studyType"] = study_type
    if phases := _split(row.get("Phases")):
        design["phases"] = phases
    enrollment = _clean(row.get("Enrollment"))
    if enrollment is not None:
        with contextlib.suppress(ValueError):
            design["enrollmentInfo"] = {"count": int(float(enrollment))}
    design_info: dict[str, Any] = {}
    for part in _split(row.get("Study Design")):
        label, _, value = part.partition(":")
        value = value.strip()
        for csv_label, key in _DESIGN_FIELDS:
            if label.strip() == csv_label and value:
                if key == "masking":
                    found = _MASKING.match(value)
                    if found:
                        design_info["maskingInfo"] = {"masking": found.group(1)}
                        if found.group(2):
                            design_info["maskingInfo"]["whoMasked"] = [
                                w.strip() for w in found.group(2).split(",") if w.strip()
                            ]
                    else:
                        design_info["maskingInfo"] = {"masking": value}
                else:
                    design_info[key] = value
    if design_info:
        design["designInfo"] = design_info

    interventions = []
    for item in _split(row.get("Interventions")):
        found = _ENUM_PREFIX.match(item)
        if found:
            entry = {"type": found.group(1)}
            if (found.group(2) or "").strip():
                entry["name"] = found.group(2).strip()
            interventions.append(entry)
        else:
            interventions.append({"name": item})

    eligibility: dict[str, Any] = {}
    if sex := _clean(row.get("Sex")):
        eligibility["sex"] = sex
    if ages := [a.strip() for a in (row.get("Age") or "").split(",") if a.strip()]:
        eligibility["stdAges"] = ages

    ps: dict[str, Any] = {"identificationModule": ident}
    if status:
        ps["statusModule"] = status
    if sponsor:
        ps["sponsorCollaboratorsModule"] = sponsor
    if summary := _clean(row.get("Brief Summary")):
        ps["descriptionModule"] = {"briefSummary": summary}
    if conditions := _split(row.get("Conditions")):
        ps["conditionsModule"] = {"conditions": conditions}
    if design:
        ps["designModule"] = design
    if interventions:
        ps["armsInterventionsModule"] = {"interventions": interventions}
    outcomes = {
        key: [{"measure": m} for m in _split(row.get(column))]
        for column, key in _OUTCOME_KEYS
        if _split(row.get(column))
    }
    if outcomes:
        ps["outcomesModule"] = outcomes
    if eligibility:
        ps["eligibilityModule"] = eligibility
    if locations := [parse_location(loc) for loc in _split(row.get("Locations"))]:
        ps["contactsLocationsModule"] = {"locations": locations}

    study: dict[str, Any] = {"protocolSection": ps}
    results = (_clean(row.get("Study Results")) or "").upper()
    if results in {"YES", "NO"}:
        study["hasResults"] = results == "YES"
    return study


def iter_csv_records(text: IO[str], path: str) -> Iterator[RawRecord]:
    """Rows of a registry CSV as :class:`RawRecord` (position = CSV line of the row)."""
    reader = csv.DictReader(text)
    header = reader.fieldnames or []
    missing = [c for c in ("NCT Number", "Study Title") if c not in header]
    if missing:
        yield RawRecord(path, "header", error=f"not a registry CSV: missing columns {missing}")
        return
    try:
        for row in reader:
            position = f"line {reader.line_num}"
            if None in row:
                yield RawRecord(path, position, error="more fields than the header")
                continue
            if not _clean(row.get("NCT Number")):
                yield RawRecord(path, position, error="empty NCT Number")
                continue
            yield RawRecord(path, position, study=csv_row_to_study(row))
    except csv.Error as exc:
        yield RawRecord(path, f"line {reader.line_num}", error=f"bad CSV: {exc}")


def study_to_csv_row(study: dict[str, Any]) -> dict[str, str]:
    """API v2 study -> one row of the registry CSV layout."""
    ps = study.get("protocolSection") or {}
    ident = ps.get("identificationModule") or {}
    status = ps.get("statusModule") or {}
    sponsor = ps.get("sponsorCollaboratorsModule") or {}
    design = ps.get("designModule") or {}
    info = design.get("designInfo") or {}
    nct = ident.get("nctId") or ""
    enrollment = _get(design, "enrollmentInfo", "count")

    def join(values: Iterable[Any], sep: str = "|") -> str:
        return sep.join(str(v) for v in values if v not in (None, ""))

    design_parts = []
    for label, key in _DESIGN_FIELDS:
        if key == "masking":
            masking = _get(info, "maskingInfo", "masking")
            if masking:
                who = _get(info, "maskingInfo", "whoMasked") or []
                design_parts.append(f"Masking: {masking}" + (f" ({', '.join(who)})" if who else ""))
        elif info.get(key):
            design_parts.append(f"{label}: {info[key]}")
    outcomes = ps.get("outcomesModule") or {}
    row = {
        "NCT Number": nct,
        "Study Title": ident.get("briefTitle") or "",
        "Study URL": f"https://clinicaltrials.gov/study/{nct}" if nct else "",
        "Acronym": ident.get("acronym") or "",
        "Study Status": status.get("overallStatus") or "",
        "Brief Summary": _get(ps, "descriptionModule", "briefSummary") or "",
        "Study Results": "YES" if study.get("hasResults") else "NO",
        "Conditions": join(_get(ps, "conditionsModule", "conditions") or []),
        "Interventions": join(
            f"{i.get('type')}: {i.get('name') or ''}" if i.get("type") else i.get("name")
            for i in _get(ps, "armsInterventionsModule", "interventions") or []
        ),
        "Sponsor": _get(sponsor, "leadSponsor", "name") or "",
        "Collaborators": join(c.get("name") for c in sponsor.get("collaborators") or []),
        "Sex": _get(ps, "eligibilityModule", "sex") or "",
        "Age": join(_get(ps, "eligibilityModule", "stdAges") or [], ", "),
        "Phases": join(design.get("phases") or []),
        "Enrollment": "" if enrollment is None else str(enrollment),
        "Funder Type": _get(sponsor, "leadSponsor", "class") or "",
        "Study Type": design.get("studyType") or "",
        "Study Design": "|".join(design_parts),
        "Other IDs": join(
            [_get(ident, "orgStudyIdInfo", "id")]
            + [s.get("id") for s in ident.get("secondaryIdInfos") or []]
        ),
        "Locations": join(
            join((loc.get(k) for k in ("facility", "city", "state", "zip", "country")), ", ")
            for loc in _get(ps, "contactsLocationsModule", "locations") or []
        ),
        "Study Documents": join(
            f"{d.get('label') or d.get('typeAbbrev')}, https://cdn.clinicaltrials.gov/"
            f"large-docs/{nct[-2:]}/{nct}/{d.get('filename')}"
            for d in _get(study, "documentSection", "largeDocumentModule", "largeDocs") or []
        ),
    }
    for column, key in _OUTCOME_KEYS:
        row[column] = join(
            join((o.get("measure"), o.get("description"), o.get("timeFrame")), ", ")
            for o in outcomes.get(key) or []
        )
    for column, key in _DATE_KEYS:
        row[column] = _get(status, key, "date") or ""
    return {column: row.get(column, "") for column in CSV_COLUMNS}


def studies_to_registry_csv(studies: Iterable[dict[str, Any]], path: str | Path | IO[str]) -> int:
    """Write studies in the registry's CSV download layout; returns the row count."""
    if isinstance(path, str | Path):
        with Path(path).open("w", encoding="utf-8", newline="") as handle:
            return studies_to_registry_csv(studies, handle)
    writer = csv.DictWriter(path, fieldnames=list(CSV_COLUMNS))
    writer.writeheader()
    n = 0
    for study in studies:
        writer.writerow(study_to_csv_row(study))
        n += 1
    return n


def read_registry_csv(path: str | Path) -> list[dict[str, Any]]:
    """All studies of a registry CSV file (convenience; errors are skipped)."""
    with Path(path).open(encoding="utf-8-sig", newline="") as handle:
        return [r.study for r in iter_csv_records(handle, str(path)) if r.study is not None]


__all__ = [
    "CSV_COLUMNS",
    "csv_row_to_study",
    "iter_csv_records",
    "parse_location",
    "read_registry_csv",
    "studies_to_registry_csv",
    "study_to_csv_row",
]
