"""Typed schema of the API v2 record parts the store indexes: the import's fast path.

:func:`irtscope.trials._normalize.normalize_rows` reads a parsed dict and tolerates anything
(partial records are normal in the registry). Building that dict costs more than everything
else an import does: a record is ~20 kB, and most of it (eligibility text, descriptions,
results, MeSH trees) is never indexed. Here msgspec decodes the record's bytes straight into
small typed structs, skipping every other key in C, and rows come out of the structs with
``astuple`` in table column order.

The fields are typed strictly (``str``, ``int``, ``bool``, lists of ``str``, all optional):
a record that does not fit is not guessed at; :func:`fast_rows` returns ``None`` and the
caller normalizes the whole parsed dict with the tolerant rules. Where both apply they give
the same rows (a test checks every shared record both ways), so the fast path changes speed,
never results.
"""

from __future__ import annotations

from typing import Any

import msgspec
from msgspec.structs import astuple

from irtscope.trials._normalize import TABLE_COLUMNS, parse_partial_date

# gc=False: these structs never form cycles, and untracked objects are cheaper to make and
# free (a batch holds thousands of them).


class _Date(msgspec.Struct, gc=False):
    date: str | None = None
    type: str | None = None


class _Named(msgspec.Struct, gc=False):
    """An organization or a sponsor: ``name``/``fullName`` and registry ``class``."""

    name: str | None = None
    class_: str | None = msgspec.field(default=None, name="class")


class _Organization(msgspec.Struct, gc=False):
    fullName: str | None = None
    class_: str | None = msgspec.field(default=None, name="class")


class _OrgStudyId(msgspec.Struct, gc=False):
    id: str | None = None


# Field order = column order of the child table (astuple gives the row).
class _SecondaryId(msgspec.Struct, gc=False):
    id: str | None = None
    type: str | None = None
    domain: str | None = None


class _Intervention(msgspec.Struct, gc=False):
    type: str | None = None
    name: str | None = None
    description: str | None = None
    otherNames: list[str] | None = None
    armGroupLabels: list[str] | None = None


class _ArmGroup(msgspec.Struct, gc=False):
    label: str | None = None
    type: str | None = None
    description: str | None = None
    interventionNames: list[str] | None = None


class _Location(msgspec.Struct, gc=False):
    facility: str | None = None
    city: str | None = None
    state: str | None = None
    zip: str | None = None
    country: str | None = None
    status: str | None = None


class _Identification(msgspec.Struct, gc=False):
    nctId: str | None = None
    nctIdAliases: list[str] | None = None
    orgStudyIdInfo: _OrgStudyId | None = None
    secondaryIdInfos: list[_SecondaryId] | None = None
    organization: _Organization | None = None
    briefTitle: str | None = None
    officialTitle: str | None = None
    acronym: str | None = None


class _Status(msgspec.Struct, gc=False):
    statusVerifiedDate: str | None = None
    overallStatus: str | None = None
    lastKnownStatus: str | None = None
    whyStopped: str | None = None
    startDateStruct: _Date | None = None
    primaryCompletionDateStruct: _Date | None = None
    completionDateStruct: _Date | None = None
    studyFirstSubmitDate: str | None = None
    studyFirstSubmitQcDate: str | None = None
    studyFirstPostDateStruct: _Date | None = None
    resultsFirstPostDateStruct: _Date | None = None
    lastUpdatePostDateStruct: _Date | None = None


class _Sponsors(msgspec.Struct, gc=False):
    leadSponsor: _Named | None = None
    collaborators: list[_Named] | None = None


class _Oversight(msgspec.Struct, gc=False):
    oversightHasDmc: bool | None = None


class _Conditions(msgspec.Struct, gc=False):
    conditions: list[str] | None = None
    keywords: list[str] | None = None


class _Enrollment(msgspec.Struct, gc=False):
    count: int | None = None
    type: str | None = None


class _Masking(msgspec.Struct, gc=False):
    masking: str | None = None
    whoMasked: list[str] | None = None


class _DesignInfo(msgspec.Struct, gc=False):
    allocation: str | None = None
    interventionModel: str | None = None
    primaryPurpose: str | None = None
    maskingInfo: _Masking | None = None


class _Design(msgspec.Struct, gc=False):
    studyType: str | None = None
    phases: list[str] | None = None
    designInfo: _DesignInfo | None = None
    enrollmentInfo: _Enrollment | None = None


class _ArmsInterventions(msgspec.Struct, gc=False):
    armGroups: list[_ArmGroup] | None = None
    interventions: list[_Intervention] | None = None


class _Eligibility(msgspec.Struct, gc=False):
    healthyVolunteers: bool | None = None
    sex: str | None = None
    minimumAge: str | None = None
    maximumAge: str | None = None
    stdAges: list[str] | None = None


class _ContactsLocations(msgspec.Struct, gc=False):
    locations: list[_Location] | None = None


class _Protocol(msgspec.Struct, gc=False):
    identificationModule: _Identification | None = None
    statusModule: _Status | None = None
    sponsorCollaboratorsModule: _Sponsors | None = None
    oversightModule: _Oversight | None = None
    conditionsModule: _Conditions | None = None
    designModule: _Design | None = None
    armsInterventionsModule: _ArmsInterventions | None = None
    eligibilityModule: _Eligibility | None = None
    contactsLocationsModule: _ContactsLocations | None = None


class _MiscInfo(msgspec.Struct, gc=False):
    versionHolder: str | None = None


class _Derived(msgspec.Struct, gc=False):
    miscInfoModule: _MiscInfo | None = None


class _Study(msgspec.Struct, gc=False):
    protocolSection: _Protocol | None = None
    hasResults: bool | None = None
    derivedSection: _Derived | None = None


_DECODER = msgspec.json.Decoder(_Study)

_EMPTY_IDENT = _Identification()
_EMPTY_STATUS = _Status()
_EMPTY_SPONSORS = _Sponsors()
_EMPTY_CONDITIONS = _Conditions()
_EMPTY_DESIGN = _Design()
_EMPTY_DESIGN_INFO = _DesignInfo()
_EMPTY_ARMS = _ArmsInterventions()
_EMPTY_ELIGIBILITY = _Eligibility()
_EMPTY_DATE = _Date()
_STUDY_COLUMN_COUNT = len(TABLE_COLUMNS["studies"])


class FastRecord(msgspec.Struct, gc=False):
    """What the store needs of one record: its id, the fields that order versions, rows."""

    nct_id: str | None
    last_update_posted: str | None
    version_holder: str | None
    rows: dict[str, list[tuple[Any, ...]]]


def fast_rows(canonical: bytes) -> FastRecord | None:
    """Decode ``canonical`` into the typed schema and build every normalized row.

    Returns ``None`` when the record is valid JSON but does not fit the schema (a module
    that is not an object, a number where text belongs, no ``protocolSection``...): the
    caller then applies the tolerant dict rules, which also word the error if there is one.

    Raises
    ------
    msgspec.DecodeError
        When ``canonical`` is not well-formed JSON (``ValidationError`` never escapes).
    """
    try:
        study = _DECODER.decode(canonical)
    except msgspec.ValidationError:
        return None
    ps = study.protocolSection
    if ps is None:
        return None
    ident = ps.identificationModule or _EMPTY_IDENT
    status = ps.statusModule or _EMPTY_STATUS
    sponsor_mod = ps.sponsorCollaboratorsModule or _EMPTY_SPONSORS
    cond_mod = ps.conditionsModule or _EMPTY_CONDITIONS
    design = ps.designModule or _EMPTY_DESIGN
    design_info = design.designInfo or _EMPTY_DESIGN_INFO
    masking = design_info.maskingInfo
    enrollment = design.enrollmentInfo
    elig = ps.eligibilityModule or _EMPTY_ELIGIBILITY
    arms = ps.armsInterventionsModule or _EMPTY_ARMS
    contacts = ps.contactsLocationsModule
    locations = (contacts.locations if contacts is not None else None) or []
    lead = sponsor_mod.leadSponsor
    organization = ident.organization
    first_posted = status.studyFirstPostDateStruct or _EMPTY_DATE
    results_posted = status.resultsFirstPostDateStruct or _EMPTY_DATE
    last_update = status.lastUpdatePostDateStruct or _EMPTY_DATE
    start = status.startDateStruct or _EMPTY_DATE
    primary = status.primaryCompletionDateStruct or _EMPTY_DATE
    completion = status.completionDateStruct or _EMPTY_DATE
    start_text, start_precision, start_value = parse_partial_date(start.date)
    primary_text, primary_precision, _ = parse_partial_date(primary.date)
    completion_text, completion_precision, _ = parse_partial_date(completion.date)
    oversight = ps.oversightModule
    misc = study.derivedSection.miscInfoModule if study.derivedSection is not None else None

    # The order of TABLE_COLUMNS["studies"] (a test compares with normalize_rows).
    study_row = (
        ident.briefTitle,
        ident.officialTitle,
        ident.acronym,
        ident.orgStudyIdInfo.id if ident.orgStudyIdInfo is not None else None,
        organization.fullName if organization is not None else None,
        organization.class_ if organization is not None else None,
        status.overallStatus,
        status.lastKnownStatus,
        status.whyStopped,
        study.hasResults,
        status.statusVerifiedDate,
        start_text,
        start_precision,
        start.type,
        start_value,
        primary_text,
        primary_precision,
        primary.type,
        completion_text,
        completion_precision,
        completion.type,
        status.studyFirstSubmitDate,
        status.studyFirstSubmitQcDate,
        first_posted.date,
        first_posted.type,
        results_posted.date,
        last_update.date,
        last_update.type,
        design.studyType,
        design.phases,
        enrollment.count if enrollment is not None else None,
        enrollment.type if enrollment is not None else None,
        design_info.allocation,
        design_info.interventionModel,
        masking.masking if masking is not None else None,
        masking.whoMasked if masking is not None else None,
        design_info.primaryPurpose,
        oversight.oversightHasDmc if oversight is not None else None,
        elig.sex,
        elig.minimumAge,
        elig.maximumAge,
        elig.stdAges,
        elig.healthyVolunteers,
        lead.name if lead is not None else None,
        lead.class_ if lead is not None else None,
        len(locations),
    )
    sponsors = []
    if lead is not None and (lead.name is not None or lead.class_ is not None):
        sponsors.append((0, "lead", lead.name, lead.class_))
    sponsors.extend(
        (i, "collaborator", collab.name, collab.class_)
        for i, collab in enumerate(sponsor_mod.collaborators or (), start=1)
    )
    rows = {
        "studies": [study_row],
        "sponsors": sponsors,
        "conditions": list(enumerate(cond_mod.conditions or ())),
        "keywords": list(enumerate(cond_mod.keywords or ())),
        "interventions": [(i, *astuple(x)) for i, x in enumerate(arms.interventions or ())],
        "arm_groups": [(i, *astuple(x)) for i, x in enumerate(arms.armGroups or ())],
        "locations": [(i, *astuple(x)) for i, x in enumerate(locations)],
        "secondary_ids": [(i, *astuple(x)) for i, x in enumerate(ident.secondaryIdInfos or ())],
        "aliases": [(a,) for a in ident.nctIdAliases or () if a],
    }
    return FastRecord(
        nct_id=ident.nctId or None,
        last_update_posted=last_update.date,
        version_holder=misc.versionHolder if misc is not None else None,
        rows=rows,
    )
