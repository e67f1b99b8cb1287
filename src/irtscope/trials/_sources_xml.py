"""The registry's legacy ``<clinical_study>`` XML -> API v2-shaped study dicts.

Until 2024 ClinicalTrials.gov published every record as one XML file (the AllPublicXML bulk
zip: ``NCTxxxx/NCTxxxxxxxx.xml`` members plus a ``Contents.txt`` index). Archived landscapes
and older downloads come in this form, so :func:`iter_xml_stream` reads one such file (or zip
member) and yields it as a :class:`RawRecord` whose ``raw`` is the converted API v2 JSON
(orjson bytes): the store, screening and classification then treat it exactly like a record
fetched from API v2. ``docs/legacy-xml.md`` lists the mapping field by field and where the
two formats cannot agree.

Safety: the XML is untrusted. A document type declaration is refused before the parser sees
it (no internal entities, so no billion-laughs expansion; no external entities or DTDs are
ever fetched), and a record is read in chunks up to :data:`MAX_RECORD_BYTES`, so a hostile
member of a zip cannot make us hold gigabytes. Malformed XML, a wrong root element or an
oversized record becomes an error entry (file, position, NCT id when it was already seen,
reason) and the next file is read.
"""

from __future__ import annotations

import calendar
import contextlib
import re
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from typing import IO, Any

import orjson

from irtscope.trials._sources_files import RawRecord

#: Largest record read (bytes of XML). The biggest AllPublicXML records, with full results
#: sections, are a few MB; anything far beyond that is not a registry record.
MAX_RECORD_BYTES = 64 << 20
_CHUNK = 1 << 16
_ROOT = "clinical_study"

_MONTHS = {name.lower(): number for number, name in enumerate(calendar.month_name) if name}
_DAY_DATE = re.compile(r"^([A-Za-z]+)\s+(\d{1,2}),\s*(\d{4})$")
_MONTH_DATE = re.compile(r"^([A-Za-z]+)\s+(\d{4})$")
_YEAR_DATE = re.compile(r"^(\d{4})$")
_DOWNLOAD_DATE = re.compile(r"([A-Za-z]+\s+\d{1,2},\s*\d{4})")
_AGE = re.compile(r"^(\d+(?:\.\d+)?)\s*(Year|Month|Week|Day|Hour|Minute)s?$", re.IGNORECASE)
_LIST_ITEM = re.compile(r"^(?:[-*\u2022\u25cf\u25aa\u00b7o]\s|\(?\d{1,3}[.)]\s|\(?[a-zA-Z][.)]\s)")
_WS = re.compile(r"[ \t]+")

# -- enumerations: legacy display text -> API v2 enum ------------------------------------
# Every value of the legacy public.xsd enumerations (and the pre-2017 spellings still found
# in old downloads); an unknown value falls back to _enum_fallback.
_STATUS = {
    "Active, not recruiting": "ACTIVE_NOT_RECRUITING",
    "Completed": "COMPLETED",
    "Enrolling by invitation": "ENROLLING_BY_INVITATION",
    "Not yet recruiting": "NOT_YET_RECRUITING",
    "Recruiting": "RECRUITING",
    "Suspended": "SUSPENDED",
    "Terminated": "TERMINATED",
    "Withdrawn": "WITHDRAWN",
    "Available": "AVAILABLE",
    "No longer available": "NO_LONGER_AVAILABLE",
    "Temporarily not available": "TEMPORARILY_NOT_AVAILABLE",
    "Approved for marketing": "APPROVED_FOR_MARKETING",
    "Withheld": "WITHHELD",
    "Unknown status": "UNKNOWN",
}
_PHASES = {
    "Early Phase 1": ["EARLY_PHASE1"],
    "Phase 0": ["EARLY_PHASE1"],
    "Phase 1": ["PHASE1"],
    "Phase 1/Phase 2": ["PHASE1", "PHASE2"],
    "Phase 2": ["PHASE2"],
    "Phase 2/Phase 3": ["PHASE2", "PHASE3"],
    "Phase 3": ["PHASE3"],
    "Phase 4": ["PHASE4"],
    "N/A": ["NA"],
}
_STUDY_TYPE = {
    "Interventional": "INTERVENTIONAL",
    "Observational": "OBSERVATIONAL",
    "Observational [Patient Registry]": "OBSERVATIONAL",
    "Expanded Access": "EXPANDED_ACCESS",
}
_ALLOCATION = {"Randomized": "RANDOMIZED", "Non-Randomized": "NON_RANDOMIZED", "N/A": "NA"}
_MODEL = {
    "Single Group Assignment": "SINGLE_GROUP",
    "Parallel Assignment": "PARALLEL",
    "Crossover Assignment": "CROSSOVER",
    "Factorial Assignment": "FACTORIAL",
    "Sequential Assignment": "SEQUENTIAL",
}
_PURPOSE = {
    "Treatment": "TREATMENT",
    "Prevention": "PREVENTION",
    "Diagnostic": "DIAGNOSTIC",
    "Supportive Care": "SUPPORTIVE_CARE",
    "Screening": "SCREENING",
    "Health Services Research": "HEALTH_SERVICES_RESEARCH",
    "Basic Science": "BASIC_SCIENCE",
    "Device Feasibility": "DEVICE_FEASIBILITY",
    "Educational/Counseling/Training": "ECT",
    "Other": "OTHER",
}
_MASKING = {
    "None (Open Label)": "NONE",
    "None": "NONE",
    "Open Label": "NONE",
    "Single": "SINGLE",
    "Single Blind": "SINGLE",
    "Double": "DOUBLE",
    "Double Blind": "DOUBLE",
    "Triple": "TRIPLE",
    "Quadruple": "QUADRUPLE",
}
_WHO_MASKED = {
    "Participant": "PARTICIPANT",
    "Subject": "PARTICIPANT",
    "Care Provider": "CARE_PROVIDER",
    "Caregiver": "CARE_PROVIDER",
    "Investigator": "INVESTIGATOR",
    "Outcomes Assessor": "OUTCOMES_ASSESSOR",
}
_OBS_MODEL = {
    "Cohort": "COHORT",
    "Case-Control": "CASE_CONTROL",
    "Case Control": "CASE_CONTROL",
    "Case-Only": "CASE_ONLY",
    "Case-Crossover": "CASE_CROSSOVER",
    "Ecologic or Community": "ECOLOGIC_OR_COMMUNITY",
    "Ecologic or Community Study": "ECOLOGIC_OR_COMMUNITY",
    "Family-Based": "FAMILY_BASED",
    "Defined Population": "DEFINED_POPULATION",
    "Natural History": "NATURAL_HISTORY",
    "Other": "OTHER",
}
_TIME_PERSPECTIVE = {
    "Retrospective": "RETROSPECTIVE",
    "Prospective": "PROSPECTIVE",
    "Cross-Sectional": "CROSS_SECTIONAL",
    "Other": "OTHER",
}
_ARM_TYPE = {
    "Experimental": "EXPERIMENTAL",
    "Active Comparator": "ACTIVE_COMPARATOR",
    "Placebo Comparator": "PLACEBO_COMPARATOR",
    "Sham Comparator": "SHAM_COMPARATOR",
    "No Intervention": "NO_INTERVENTION",
    "Other": "OTHER",
}
#: Intervention types; API v2 writes an arm's ``interventionNames`` as "<legacy label>: name".
_INTERVENTION_TYPE = {
    "Behavioral": "BEHAVIORAL",
    "Biological": "BIOLOGICAL",
    "Combination Product": "COMBINATION_PRODUCT",
    "Device": "DEVICE",
    "Diagnostic Test": "DIAGNOSTIC_TEST",
    "Dietary Supplement": "DIETARY_SUPPLEMENT",
    "Drug": "DRUG",
    "Genetic": "GENETIC",
    "Other": "OTHER",
    "Procedure": "PROCEDURE",
    "Procedure/Surgery": "PROCEDURE",
    "Radiation": "RADIATION",
}
_SEX = {"All": "ALL", "Both": "ALL", "Female": "FEMALE", "Male": "MALE"}
#: The legacy format knows four funder classes; API v2 also has OTHER_GOV, NETWORK, INDIV,
#: AMBIG and UNKNOWN, which a legacy record cannot express (they were all "Other").
_AGENCY_CLASS = {"NIH": "NIH", "U.S. Fed": "FED", "Industry": "INDUSTRY", "Other": "OTHER"}
_RESPONSIBLE = {
    "Sponsor": "SPONSOR",
    "Principal Investigator": "PRINCIPAL_INVESTIGATOR",
    "Sponsor-Investigator": "SPONSOR_INVESTIGATOR",
}
_OFFICIAL_ROLE = {
    "Principal Investigator": "PRINCIPAL_INVESTIGATOR",
    "Sub-Investigator": "SUB_INVESTIGATOR",
    "Study Chair": "STUDY_CHAIR",
    "Study Director": "STUDY_DIRECTOR",
}
_DATE_TYPE = {"Actual": "ACTUAL", "Anticipated": "ESTIMATED", "Estimate": "ESTIMATED"}
_SAMPLING = {
    "Probability Sample": "PROBABILITY_SAMPLE",
    "Non-Probability Sample": "NON_PROBABILITY_SAMPLE",
}
_BIOSPEC = {
    "None Retained": "NONE_RETAINED",
    "Samples With DNA": "SAMPLES_WITH_DNA",
    "Samples Without DNA": "SAMPLES_WITHOUT_DNA",
}
_IPD_SHARING = {"Yes": "YES", "No": "NO", "Undecided": "UNDECIDED"}
_IPD_INFO = {
    "Study Protocol": "STUDY_PROTOCOL",
    "Statistical Analysis Plan (SAP)": "SAP",
    "Informed Consent Form (ICF)": "ICF",
    "Clinical Study Report (CSR)": "CSR",
    "Analytic Code": "ANALYTIC_CODE",
}
_YES_NO = {"Yes": True, "No": False}
_HEALTHY = {"Accepts Healthy Volunteers": True, "Yes": True, "No": False}

#: (legacy element, API v2 key) of the plain dates in statusModule.
_PLAIN_DATES = (
    ("study_first_submitted", "studyFirstSubmitDate"),
    ("study_first_submitted_qc", "studyFirstSubmitQcDate"),
    ("results_first_submitted", "resultsFirstSubmitDate"),
    ("results_first_submitted_qc", "resultsFirstSubmitQcDate"),
    ("disposition_first_submitted", "dispFirstSubmitDate"),
    ("disposition_first_submitted_qc", "dispFirstSubmitQcDate"),
    ("last_update_submitted", "lastUpdateSubmitDate"),
)
#: (legacy element, API v2 key) of the dates with a type (actual / estimated).
_TYPED_DATES = (
    ("start_date", "startDateStruct"),
    ("primary_completion_date", "primaryCompletionDateStruct"),
    ("completion_date", "completionDateStruct"),
    ("study_first_posted", "studyFirstPostDateStruct"),
    ("results_first_posted", "resultsFirstPostDateStruct"),
    ("disposition_first_posted", "dispFirstPostDateStruct"),
    ("last_update_posted", "lastUpdatePostDateStruct"),
)
_OVERSIGHT = (
    ("has_dmc", "oversightHasDmc"),
    ("is_fda_regulated_drug", "isFdaRegulatedDrug"),
    ("is_fda_regulated_device", "isFdaRegulatedDevice"),
    ("is_unapproved_device", "isUnapprovedDevice"),
    ("is_ppsd", "isPpsd"),
    ("is_us_export", "isUsExport"),
)
_OUTCOMES = (
    ("primary_outcome", "primaryOutcomes"),
    ("secondary_outcome", "secondaryOutcomes"),
    ("other_outcome", "otherOutcomes"),
)


class LegacyXmlError(ValueError):
    """A legacy XML record that cannot be read (the message says why)."""


# -- small value converters ---------------------------------------------------------------
def _enum_fallback(text: str) -> str:
    """An enum value the tables do not know, written the way API v2 spells enums."""
    return re.sub(r"[^A-Z0-9]+", "_", text.upper()).strip("_")


def _enum(table: dict[str, str], text: str | None) -> str | None:
    if text is None:
        return None
    return table.get(text) or _enum_fallback(text)


def _clean(text: str | None) -> str | None:
    """A one-line value as given (stripped); ``None`` for an absent or empty element."""
    if text is None:
        return None
    text = text.strip()
    return text or None


def legacy_date(text: str | None) -> str | None:
    """``"July 15, 2016"`` -> ``"2016-07-15"``, ``"July 2016"`` -> ``"2016-07"``.

    The precision stays what the record gave (API v2 writes partial dates the same way).
    Text that is not such a date is kept as given, so nothing is silently lost.
    """
    text = _clean(text)
    if text is None:
        return None
    if found := _DAY_DATE.match(text):
        month = _MONTHS.get(found.group(1).lower())
        if month:
            return f"{found.group(3)}-{month:02d}-{int(found.group(2)):02d}"
    elif found := _MONTH_DATE.match(text):
        month = _MONTHS.get(found.group(1).lower())
        if month:
            return f"{found.group(2)}-{month:02d}"
    elif _YEAR_DATE.match(text):
        return text
    return text


def download_date(text: str | None) -> str | None:
    """``"ClinicalTrials.gov processed this data on July 28, 2020"`` -> ``"2020-07-28"``."""
    found = _DOWNLOAD_DATE.search(text or "")
    return legacy_date(found.group(1)) if found else None


def age_in_years(text: str | None) -> float | None:
    """``"18 Years"``, ``"6 Months"`` ... -> years; ``None`` for "N/A" or no limit."""
    found = _AGE.match((text or "").strip())
    if not found:
        return None
    per_year = {"year": 1, "month": 12, "week": 52.1775, "day": 365.25, "hour": 8766,
                "minute": 525960}[found.group(2).lower()]  # fmt: skip
    return float(found.group(1)) / per_year


def std_ages(minimum: str | None, maximum: str | None) -> list[str]:
    """The registry's age groups from the age limits: child 0-17, adult 18-64, older adult 65+.

    A group is listed when the eligible age range overlaps it; a missing limit is open
    (no minimum = from birth, no maximum = no upper limit). API v2 derives ``stdAges`` the
    same way; the legacy XML does not carry it.
    """
    low = age_in_years(minimum) or 0.0
    high = age_in_years(maximum)
    high = float("inf") if high is None else high
    groups = []
    if low < 18:
        groups.append("CHILD")
    if low < 65 and high >= 18:
        groups.append("ADULT")
    if high >= 65:
        groups.append("OLDER_ADULT")
    return groups


def textblock(text: str | None) -> str | None:
    """A legacy ``<textblock>`` as the submitted text: indentation and line wrapping removed.

    The legacy export re-wraps every text at ~80 columns and indents it; lines of one
    paragraph are joined again (so phrases that span a wrap, "with or without\\n SBRT",
    read as written), while blank lines and lines that start a list item stay breaks.
    """
    if text is None:
        return None
    out: list[str] = []
    for raw_line in text.splitlines():
        line = _WS.sub(" ", raw_line.strip())
        if not line:
            if out and out[-1] != "":
                out.append("")
            continue
        if out and out[-1] != "" and not _LIST_ITEM.match(line):
            out[-1] = f"{out[-1]} {line}"
        else:
            out.append(line)
    result = "\n".join(out).strip()
    return result or None


# -- element helpers ----------------------------------------------------------------------
def _text(node: ET.Element | None, path: str) -> str | None:
    return None if node is None else _clean(node.findtext(path))


def _texts(node: ET.Element | None, path: str) -> list[str]:
    if node is None:
        return []
    return [value for el in node.findall(path) if (value := _clean(el.text))]


def _block(node: ET.Element | None, path: str) -> str | None:
    """A text element that may wrap its text in ``<textblock>`` (or hold it directly)."""
    if node is None:
        return None
    element = node.find(path)
    if element is None:
        return None
    inner = element.find("textblock")
    if inner is not None:
        return textblock(inner.text)
    return _multiline(element.text)


def _multiline(text: str | None) -> str | None:
    """A plain (not ``<textblock>``) text: the export keeps its line breaks as submitted."""
    lines = [line.rstrip() for line in (text or "").strip().splitlines()]
    return "\n".join(lines) or None


def _put(target: dict[str, Any], key: str, value: Any) -> None:
    """Set ``key`` unless ``value`` is empty (API v2 omits absent fields, never nulls them)."""
    if value is not None and value != [] and value != {}:
        target[key] = value


def _typed_date(element: ET.Element | None) -> dict[str, str] | None:
    if element is None or not _clean(element.text):
        return None
    struct = {"date": legacy_date(element.text)}
    _put(struct, "type", _enum(_DATE_TYPE, element.get("type")))
    return struct  # type: ignore[return-value]


# -- modules ------------------------------------------------------------------------------
def _identification(root: ET.Element) -> dict[str, Any]:
    ident: dict[str, Any] = {}
    _put(ident, "nctId", _text(root, "id_info/nct_id"))
    _put(ident, "nctIdAliases", _texts(root, "id_info/nct_alias"))
    if org_id := _text(root, "id_info/org_study_id"):
        ident["orgStudyIdInfo"] = {"id": org_id}
    _put(ident, "secondaryIdInfos", [{"id": i} for i in _texts(root, "id_info/secondary_id")])
    if source := _text(root, "source"):
        organization = {"fullName": source}
        # The legacy <source> has no class; it is the lead sponsor's when they are the same
        # organization (as the registry itself records it).
        if source == _text(root, "sponsors/lead_sponsor/agency"):
            _put(
                organization,
                "class",
                _enum(_AGENCY_CLASS, _text(root, "sponsors/lead_sponsor/agency_class")),
            )
        ident["organization"] = organization
    _put(ident, "briefTitle", _text(root, "brief_title"))
    _put(ident, "officialTitle", _text(root, "official_title"))
    _put(ident, "acronym", _text(root, "acronym"))
    return ident


def _status(root: ET.Element) -> dict[str, Any]:
    status: dict[str, Any] = {}
    _put(status, "statusVerifiedDate", legacy_date(_text(root, "verification_date")))
    _put(status, "overallStatus", _enum(_STATUS, _text(root, "overall_status")))
    _put(status, "lastKnownStatus", _enum(_STATUS, _text(root, "last_known_status")))
    # why_stopped is re-wrapped and indented like a textblock, without the element
    _put(status, "whyStopped", textblock(root.findtext("why_stopped")))
    if (expanded := _text(root, "has_expanded_access")) in _YES_NO:
        status["expandedAccessInfo"] = {"hasExpandedAccess": _YES_NO[expanded]}
    for element, key in _TYPED_DATES:
        _put(status, key, _typed_date(root.find(element)))
    for element, key in _PLAIN_DATES:
        _put(status, key, legacy_date(_text(root, element)))
    return status


def _sponsor(node: ET.Element) -> dict[str, str]:
    sponsor: dict[str, str] = {}
    _put(sponsor, "name", _text(node, "agency"))
    _put(sponsor, "class", _enum(_AGENCY_CLASS, _text(node, "agency_class")))
    return sponsor


def _sponsors(root: ET.Element) -> dict[str, Any]:
    module: dict[str, Any] = {}
    party = root.find("responsible_party")
    if party is not None:
        responsible: dict[str, Any] = {}
        _put(responsible, "type", _enum(_RESPONSIBLE, _text(party, "responsible_party_type")))
        _put(responsible, "investigatorFullName", _text(party, "investigator_full_name"))
        _put(responsible, "investigatorTitle", _text(party, "investigator_title"))
        _put(responsible, "investigatorAffiliation", _text(party, "investigator_affiliation"))
        _put(responsible, "oldNameTitle", _text(party, "name_title"))
        _put(responsible, "oldOrganization", _text(party, "organization"))
        _put(module, "responsibleParty", responsible)
    lead = root.find("sponsors/lead_sponsor")
    if lead is not None:
        _put(module, "leadSponsor", _sponsor(lead))
    collaborators = [_sponsor(c) for c in root.findall("sponsors/collaborator")]
    _put(module, "collaborators", [c for c in collaborators if c])
    return module


def _oversight(root: ET.Element) -> dict[str, Any]:
    module: dict[str, Any] = {}
    for element, key in _OVERSIGHT:
        value = _text(root, f"oversight_info/{element}")
        if value in _YES_NO:
            module[key] = _YES_NO[value]
    return module


def _design(root: ET.Element) -> dict[str, Any]:
    design: dict[str, Any] = {}
    study_type = _text(root, "study_type")
    _put(design, "studyType", _STUDY_TYPE.get(study_type or "") if study_type != "N/A" else None)
    if study_type and study_type not in _STUDY_TYPE and study_type != "N/A":
        design["studyType"] = _enum_fallback(study_type)
    if study_type == "Observational [Patient Registry]":
        design["patientRegistry"] = True
    expanded = root.find("expanded_access_info")
    if expanded is not None:
        types = {
            key: _YES_NO[value]
            for key in ("individual", "intermediate", "treatment")
            if (value := _text(expanded, f"expanded_access_type_{key}")) in _YES_NO
        }
        _put(design, "expandedAccessTypes", types)
    _put(design, "targetDuration", _text(root, "target_duration"))
    phase = _text(root, "phase")
    # The legacy export writes "N/A" for studies that have no phase at all (observational,
    # expanded access); API v2 gives those no phases, and NA only to interventional studies.
    if phase and (phase != "N/A" or design.get("studyType") == "INTERVENTIONAL"):
        design["phases"] = list(_PHASES.get(phase) or [_enum_fallback(phase)])
    _put(design, "designInfo", _design_info(root.find("study_design_info")))
    retention = _text(root, "biospec_retention")
    bio_spec: dict[str, Any] = {}
    _put(bio_spec, "retention", _enum(_BIOSPEC, retention))
    _put(bio_spec, "description", _block(root, "biospec_descr"))
    _put(design, "bioSpec", bio_spec)
    enrollment = root.find("enrollment")
    if enrollment is not None and _clean(enrollment.text):
        info: dict[str, Any] = {}
        with contextlib.suppress(ValueError):
            info["count"] = int(float(enrollment.text))  # type: ignore[arg-type]
        _put(info, "type", _enum(_DATE_TYPE, enrollment.get("type")))
        _put(design, "enrollmentInfo", info)
    return design


def _design_info(node: ET.Element | None) -> dict[str, Any]:
    info: dict[str, Any] = {}
    if node is None:
        return info
    _put(info, "allocation", _enum(_ALLOCATION, _text(node, "allocation")))
    _put(info, "interventionModel", _enum(_MODEL, _text(node, "intervention_model")))
    _put(info, "interventionModelDescription", _block(node, "intervention_model_description"))
    _put(info, "primaryPurpose", _enum(_PURPOSE, _text(node, "primary_purpose")))
    _put(info, "observationalModel", _enum(_OBS_MODEL, _text(node, "observational_model")))
    _put(info, "timePerspective", _enum(_TIME_PERSPECTIVE, _text(node, "time_perspective")))
    masking_text = _text(node, "masking")
    masking: dict[str, Any] = {}
    if masking_text:
        head, _, who = masking_text.partition("(")
        head = head.strip() if masking_text != "None (Open Label)" else masking_text
        masking["masking"] = _enum(_MASKING, head)
        if who and masking["masking"] != "NONE":
            roles = [w.strip() for w in who.rstrip(")").split(",") if w.strip()]
            _put(masking, "whoMasked", [_enum(_WHO_MASKED, r) for r in roles])
    _put(masking, "maskingDescription", _block(node, "masking_description"))
    _put(info, "maskingInfo", masking)
    return info


def _arms_interventions(root: ET.Element) -> dict[str, Any]:
    """Arm groups and interventions, with the links API v2 keeps on both sides.

    The legacy format links them only from the intervention (its ``arm_group_label``s);
    API v2 also lists, for each arm, its interventions as ``"<Type label>: <name>"`` in
    intervention order, so that list is rebuilt from the same links.
    """
    interventions: list[dict[str, Any]] = []
    names_by_arm: dict[str, list[str]] = {}
    for node in root.findall("intervention"):
        item: dict[str, Any] = {}
        label = _text(node, "intervention_type")
        _put(item, "type", _enum(_INTERVENTION_TYPE, label))
        name = _text(node, "intervention_name")
        _put(item, "name", name)
        _put(item, "description", _block(node, "description"))
        arms = _texts(node, "arm_group_label")
        _put(item, "armGroupLabels", arms)
        _put(item, "otherNames", _texts(node, "other_name"))
        interventions.append(item)
        display = f"{label}: {name}" if label else (name or "")
        for arm in arms:
            names_by_arm.setdefault(arm, []).append(display)
    arm_groups: list[dict[str, Any]] = []
    for node in root.findall("arm_group"):
        arm: dict[str, Any] = {}
        label = _text(node, "arm_group_label")
        _put(arm, "label", label)
        _put(arm, "type", _enum(_ARM_TYPE, _text(node, "arm_group_type")))
        _put(arm, "description", _block(node, "description"))
        _put(arm, "interventionNames", names_by_arm.get(label or "", []))
        arm_groups.append(arm)
    module: dict[str, Any] = {}
    _put(module, "armGroups", arm_groups)
    _put(module, "interventions", interventions)
    return module


def _outcomes(root: ET.Element) -> dict[str, Any]:
    module: dict[str, Any] = {}
    for element, key in _OUTCOMES:
        items = []
        for node in root.findall(element):
            outcome: dict[str, Any] = {}
            _put(outcome, "measure", _text(node, "measure"))
            _put(outcome, "description", _block(node, "description"))
            _put(outcome, "timeFrame", _text(node, "time_frame"))
            items.append(outcome)
        _put(module, key, items)
    return module


def _eligibility(root: ET.Element) -> dict[str, Any]:
    node = root.find("eligibility")
    module: dict[str, Any] = {}
    if node is None:
        return module
    _put(module, "eligibilityCriteria", _block(node, "criteria"))
    _put(module, "healthyVolunteers", _HEALTHY.get(_text(node, "healthy_volunteers") or ""))
    _put(module, "sex", _enum(_SEX, _text(node, "gender")))
    _put(module, "genderBased", _YES_NO.get(_text(node, "gender_based") or ""))
    _put(module, "genderDescription", _block(node, "gender_description"))
    minimum, maximum = _text(node, "minimum_age"), _text(node, "maximum_age")
    # "N/A" = no limit: API v2 leaves the field out.
    _put(module, "minimumAge", minimum if age_in_years(minimum) is not None else None)
    _put(module, "maximumAge", maximum if age_in_years(maximum) is not None else None)
    module["stdAges"] = std_ages(minimum, maximum)
    _put(module, "studyPopulation", _block(node, "study_pop"))
    _put(module, "samplingMethod", _enum(_SAMPLING, _text(node, "sampling_method")))
    return module


def _contact(node: ET.Element, role: str) -> dict[str, Any]:
    contact: dict[str, Any] = {}
    _put(contact, "name", _person(node))
    _put(contact, "role", role)
    _put(contact, "phone", _text(node, "phone"))
    _put(contact, "phoneExt", _text(node, "phone_ext"))
    _put(contact, "email", _text(node, "email"))
    return contact


def _person(node: ET.Element) -> str | None:
    """A legacy person: the 2017+ export puts the whole name (with degrees) in last_name."""
    parts = [_text(node, key) for key in ("first_name", "middle_name", "last_name")]
    name = " ".join(p for p in parts if p)
    degrees = _text(node, "degrees")
    return (f"{name}, {degrees}" if degrees and name else name) or None


def _location(node: ET.Element) -> dict[str, Any]:
    location: dict[str, Any] = {}
    _put(location, "facility", _text(node, "facility/name"))
    _put(location, "status", _enum(_STATUS, _text(node, "status")))
    for key in ("city", "state", "zip", "country"):
        _put(location, key, _text(node, f"facility/address/{key}"))
    contacts = [_contact(c, "CONTACT") for c in node.findall("contact")]
    contacts += [_contact(c, "CONTACT") for c in node.findall("contact_backup")]
    for investigator in node.findall("investigator"):
        role = _enum(_OFFICIAL_ROLE, _text(investigator, "role")) or "PRINCIPAL_INVESTIGATOR"
        contacts.append(_contact(investigator, role))
    _put(location, "contacts", [c for c in contacts if c])
    return location


def _contacts_locations(root: ET.Element) -> dict[str, Any]:
    module: dict[str, Any] = {}
    central = [_contact(c, "CONTACT") for c in root.findall("overall_contact")]
    central += [_contact(c, "CONTACT") for c in root.findall("overall_contact_backup")]
    _put(module, "centralContacts", [c for c in central if c])
    officials = []
    for node in root.findall("overall_official"):
        official: dict[str, Any] = {}
        _put(official, "name", _person(node))
        _put(official, "affiliation", _text(node, "affiliation"))
        _put(official, "role", _enum(_OFFICIAL_ROLE, _text(node, "role")))
        officials.append(official)
    _put(module, "overallOfficials", [o for o in officials if o])
    _put(module, "locations", [_location(node) for node in root.findall("location")])
    return module


def _references(root: ET.Element) -> dict[str, Any]:
    references = []
    for element, kind in (("reference", "BACKGROUND"), ("results_reference", "RESULT")):
        for node in root.findall(element):
            reference: dict[str, Any] = {}
            _put(reference, "pmid", _text(node, "PMID"))
            _put(reference, "type", kind)
            _put(reference, "citation", _text(node, "citation"))
            references.append(reference)
    links = []
    for node in root.findall("link"):
        link: dict[str, Any] = {}
        _put(link, "label", _text(node, "description"))
        _put(link, "url", _text(node, "url"))
        links.append(link)
    module: dict[str, Any] = {}
    _put(module, "references", references)
    _put(module, "seeAlsoLinks", links)
    return module


def _ipd(root: ET.Element) -> dict[str, Any]:
    node = root.find("patient_data")
    module: dict[str, Any] = {}
    if node is None:
        return module
    _put(module, "ipdSharing", _enum(_IPD_SHARING, _text(node, "sharing_ipd")))
    _put(module, "description", _block(node, "ipd_description"))
    _put(module, "infoTypes", [_enum(_IPD_INFO, t) for t in _texts(node, "ipd_info_type")])
    _put(module, "timeFrame", _block(node, "ipd_time_frame"))
    _put(module, "accessCriteria", _block(node, "ipd_access_criteria"))
    _put(module, "url", _text(node, "ipd_url"))
    return module


def _documents(root: ET.Element) -> dict[str, Any]:
    docs = []
    for node in root.findall("provided_document_section/provided_document"):
        doc: dict[str, Any] = {}
        for element, key in (
            ("document_has_protocol", "hasProtocol"),
            ("document_has_sap", "hasSap"),
            ("document_has_icf", "hasIcf"),
        ):
            if (value := _text(node, element)) in _YES_NO:
                doc[key] = _YES_NO[value]
        _put(doc, "label", _text(node, "document_type"))
        _put(doc, "date", legacy_date(_text(node, "document_date")))
        if url := _text(node, "document_url"):
            doc["filename"] = url.rstrip("/").rsplit("/", 1)[-1]
        docs.append(doc)
    return {"largeDocumentModule": {"largeDocs": docs}} if docs else {}


def _derived(root: ET.Element) -> dict[str, Any]:
    derived: dict[str, Any] = {}
    misc: dict[str, Any] = {}
    _put(misc, "versionHolder", download_date(_text(root, "required_header/download_date")))
    _put(misc, "removedCountries", _texts(root, "removed_countries/country"))
    _put(derived, "miscInfoModule", misc)
    for element, key in (
        ("condition_browse", "conditionBrowseModule"),
        ("intervention_browse", "interventionBrowseModule"),
    ):
        meshes = [{"term": term} for term in _texts(root, f"{element}/mesh_term")]
        if meshes:
            derived[key] = {"meshes": meshes}
    return derived


def clinical_study_to_api(root: ET.Element) -> dict[str, Any]:
    """One parsed ``<clinical_study>`` element -> an API v2 study dict.

    Raises
    ------
    LegacyXmlError
        When the element is not a ``<clinical_study>``.
    """
    if root.tag != _ROOT:
        raise LegacyXmlError(f"not a legacy registry record: root element <{root.tag}>")
    ps: dict[str, Any] = {}
    _put(ps, "identificationModule", _identification(root))
    _put(ps, "statusModule", _status(root))
    _put(ps, "sponsorCollaboratorsModule", _sponsors(root))
    _put(ps, "oversightModule", _oversight(root))
    description: dict[str, Any] = {}
    _put(description, "briefSummary", _block(root, "brief_summary"))
    _put(description, "detailedDescription", _block(root, "detailed_description"))
    _put(ps, "descriptionModule", description)
    conditions: dict[str, Any] = {}
    _put(conditions, "conditions", _texts(root, "condition"))
    _put(conditions, "keywords", _texts(root, "keyword"))
    _put(ps, "conditionsModule", conditions)
    _put(ps, "designModule", _design(root))
    _put(ps, "armsInterventionsModule", _arms_interventions(root))
    _put(ps, "outcomesModule", _outcomes(root))
    _put(ps, "eligibilityModule", _eligibility(root))
    _put(ps, "contactsLocationsModule", _contacts_locations(root))
    _put(ps, "referencesModule", _references(root))
    _put(ps, "ipdSharingStatementModule", _ipd(root))
    study: dict[str, Any] = {"protocolSection": ps}
    _put(study, "documentSection", _documents(root))
    _put(study, "derivedSection", _derived(root))
    study["hasResults"] = root.find("clinical_results") is not None
    return study


# -- reading ------------------------------------------------------------------------------
def looks_like_xml(head: bytes) -> bool:
    """Whether a file's first bytes are XML (a ``<`` after an optional BOM and blanks)."""
    return head.lstrip(b"\xef\xbb\xbf").lstrip()[:1] == b"<"


def _check_prolog(data: bytes) -> None:
    """Refuse what could expand or fetch entities: a DOCTYPE (internal or external DTD).

    A DOCTYPE may only stand before the root element, so only the bytes before the root are
    scanned; the parser itself rejects one anywhere later. Non-UTF-8 encodings are refused
    too, because this scan could not see a DOCTYPE written in them.
    """
    if data[:2] in (b"\xff\xfe", b"\xfe\xff") or b"\x00" in data[:4]:
        raise LegacyXmlError("UTF-16 XML is not supported (registry XML is UTF-8)")
    if b"<!DOCTYPE" in data or b"<!ENTITY" in data:
        raise LegacyXmlError("XML with a DTD or entity declarations is refused (untrusted input)")


def _read_tree(stream: IO[bytes]) -> tuple[ET.Element, str | None]:
    """Parse one XML document in chunks; returns the root and (for errors) nothing else.

    Raises
    ------
    LegacyXmlError
        Carrying the NCT id when it was read before the error (``args[1]``).
    """
    parser = ET.XMLPullParser(events=("start", "end"))
    prolog = b""
    root: ET.Element | None = None
    nct: str | None = None
    size = 0
    try:
        while chunk := stream.read(_CHUNK):
            size += len(chunk)
            if size > MAX_RECORD_BYTES:
                raise LegacyXmlError(f"record larger than {MAX_RECORD_BYTES >> 20} MB", nct)
            if root is None:
                prolog += chunk
                _check_prolog(prolog)
            parser.feed(chunk)
            for event, element in parser.read_events():
                if event == "start" and root is None:
                    root = element  # type: ignore[assignment]
                    if element.tag != _ROOT:  # type: ignore[union-attr]
                        raise LegacyXmlError(
                            f"not a legacy registry record: root element <{element.tag}>"  # type: ignore[union-attr]
                        )
                elif event == "end" and element.tag == "nct_id" and nct is None:  # type: ignore[union-attr]
                    nct = _clean(element.text)  # type: ignore[union-attr]
        parser.close()
    except ET.ParseError as exc:
        raise LegacyXmlError(f"malformed XML: {exc}", nct) from exc
    except LegacyXmlError as exc:
        raise LegacyXmlError(exc.args[0], nct) from None
    if root is None:
        raise LegacyXmlError("empty file: no XML element", None)
    return root, nct


def _position(reason: str) -> str:
    """``line L, column C`` of an expat error, else the whole file."""
    found = re.search(r"line (\d+), column (\d+)", reason)
    return f"line {found.group(1)} column {found.group(2)}" if found else "file"


def iter_xml_stream(stream: IO[bytes], path: str) -> Iterator[RawRecord]:
    """One legacy XML record (a file or zip member) as a :class:`RawRecord` (never raises
    on bad content: the error entry names the position, the NCT id if seen, and why)."""
    try:
        root, nct = _read_tree(stream)
        study = clinical_study_to_api(root)
    except LegacyXmlError as exc:
        reason = str(exc.args[0])
        nct = exc.args[1] if len(exc.args) > 1 else None
        yield RawRecord(path, _position(reason), error=reason, nct_id=nct)
        return
    yield RawRecord(path, "item 0", raw=orjson.dumps(study))


def read_legacy_xml(path: str) -> dict[str, Any]:
    """One legacy XML file -> its API v2 study dict (convenience for tools and tests).

    Raises
    ------
    LegacyXmlError
        When the file is not a readable ``<clinical_study>`` record.
    """
    with open(path, "rb") as handle:
        root, _ = _read_tree(handle)
    return clinical_study_to_api(root)


__all__ = [
    "MAX_RECORD_BYTES",
    "LegacyXmlError",
    "age_in_years",
    "clinical_study_to_api",
    "download_date",
    "iter_xml_stream",
    "legacy_date",
    "looks_like_xml",
    "read_legacy_xml",
    "std_ages",
    "textblock",
]
