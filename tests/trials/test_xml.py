"""Legacy ``<clinical_study>`` XML import: mapping onto API v2, layouts, bad input, versions."""

from __future__ import annotations

import gzip
import zipfile
from pathlib import Path

import orjson
import pytest
from typer.testing import CliRunner

from irtscope.cli import app
from irtscope.trials import Store, import_paths
from irtscope.trials._normalize import normalize_study
from irtscope.trials._sources_files import iter_file
from irtscope.trials._sources_xml import (
    _AGENCY_CLASS,
    _ALLOCATION,
    _ARM_TYPE,
    _BIOSPEC,
    _DATE_TYPE,
    _INTERVENTION_TYPE,
    _IPD_INFO,
    _IPD_SHARING,
    _MASKING,
    _MODEL,
    _OBS_MODEL,
    _OFFICIAL_ROLE,
    _PHASES,
    _PURPOSE,
    _RESPONSIBLE,
    _SAMPLING,
    _SEX,
    _STATUS,
    _STUDY_TYPE,
    _TIME_PERSPECTIVE,
    _WHO_MASKED,
    legacy_date,
    read_legacy_xml,
    std_ages,
    textblock,
)


@pytest.fixture(scope="module")
def irt_dir(ctgov_dir: Path) -> Path:
    path = ctgov_dir / "allpublicxml_2020" / "irt"
    if not path.is_dir():
        pytest.skip(f"legacy XML records not found at {path}")
    return path


@pytest.fixture(scope="module")
def earlier_dir(ctgov_dir: Path) -> Path:
    path = ctgov_dir / "allpublicxml_2020" / "nsclc150_earlier"
    if not path.is_dir():
        pytest.skip(f"legacy XML records not found at {path}")
    return path


def test_cli_imports_the_60_legacy_records(irt_dir: Path, tmp_path: Path) -> None:
    db = tmp_path / "xml.duckdb"
    result = CliRunner().invoke(app, ["--quiet", "trials", "import", "--db", str(db), str(irt_dir)])
    assert result.exit_code == 0, result.output
    with Store(db) as store:
        assert store.study_count() == 60
        info = store.snapshot_info()
        # a folder of legacy XML is one snapshot, dated by the dump's download date
        assert (info["snapshots"], info["data_timestamp"]) == (1, "2020-07-28")
        (n_sites,) = store.con.execute("SELECT count(*) FROM current_locations").fetchone()
        assert n_sites > 60


def test_zip_of_legacy_records(irt_dir: Path, tmp_path: Path) -> None:
    """The AllPublicXML layout: NCTxxxx/NCT....xml members plus a Contents.txt index."""
    archive = tmp_path / "AllPublicXML.zip"
    files = sorted(irt_dir.glob("*.xml"))
    with zipfile.ZipFile(archive, "w", zipfile.ZIP_DEFLATED) as handle:
        handle.writestr("Contents.txt", "\n".join(f.stem for f in files))
        for f in files:
            handle.write(f, f"{f.stem[:7]}xxxx/{f.name}")
    with Store(tmp_path / "z.duckdb") as store:
        report = import_paths(store, [archive])
        assert report.failures == []
        assert (report.entries_read, store.study_count()) == (60, 60)


# Written by reading allpublicxml_2020/irt/NCT02492568.xml (PEMBRO-RT), element by element,
# and spelling each value the way API v2 writes it (docs/legacy-xml.md has the rules).
PEMBRO_RT_CRITERIA = "\n\n".join(
    [
        "Inclusion Criteria:",
        "1. Be willing and able to provide written informed consent/assent for the trial.",
        "2. Be \u2265 18 years of age on day of signing informed consent.",
        "3. Have measurable disease based on RECIST 1.1.",
        "4. Must provide newly obtained tissue from a core or excisional biopsy of a tumor lesion"
        " and are willing to have a second biopsy performed form any non-irradiated lesion after"
        " the radiation and immune-modulating treatment.",
        "5. Have a performance status of 0 or 1 on the ECOG Performance Scale.",
        "6. Stage IV NSCLC; treated with at least 1 regimen of chemotherapy.",
        "7. Have at least 2 separate (metastatic) lesions of which one is amenable for irradiation"
        " with a size of < 5 cm.",
        "8. Demonstrate adequate organ function:",
        "Absolute neutrophil count (ANC) \u22651,500 /mcL; Platelets \u2265100,000 / mcL;"
        " Hemoglobin \u22659 g/dL or \u22655.6 mmol/L; Serum creatinine \u22641.5 X upper limit"
        " of normal (ULN) OR measured or calculated creatinine clearance (GFR can also be used in"
        " place of creatinine or CrCl) \u226550 mL/min for subject with creatinine levels > 1.5 X"
        " institutional ULN; Serum total bilirubin \u2264 1.5 X ULN OR Direct bilirubin \u2264 ULN"
        " for subjects with total bilirubin levels > 1.5 ULN; AST (SGOT) and ALT (SGPT) \u2264 2.5"
        " X ULN OR \u2264 5 X ULN for subjects with liver metastases; International Normalized"
        " Ratio (INR) or Prothrombin Time (PT) and Activated Partial Thromboplastin Time (aPTT)"
        " \u22641.5 X ULN unless subject is receiving anticoagulant therapy as long as PT or PTT"
        " is within therapeutic range of intended use of anticoagulants.",
        "All screening labs should be performed within 10 days of treatment initiation.",
        "9. Female subject of childbearing potential should have a negative urine or serum"
        " pregnancy within 72 hours prior to receiving the first dose of study medication. If"
        " the urine test is positive or cannot be confirmed as negative, a serum pregnancy test"
        " will be required.",
        "10. Female subjects of childbearing potential should be willing to use 2 methods of"
        " birth control or be surgically sterile, or abstain from heterosexual activity for the"
        " course of the study through 120 days after the last dose of study medication"
        " (Reference Section 5.7.2). Subjects of childbearing potential are those who have not"
        " been surgically sterilized or have not been free from menses for > 1 year.",
        "11. Male subjects should agree to use an adequate method of contraception starting with"
        " the first dose of study therapy through 120 days after the last dose of study therapy.",
        "Exclusion Criteria:",
        "1. Is currently participating in or has participated in a study of an investigational"
        " agent or using an investigational device within 4 weeks of the first dose of"
        " treatment.",
        "2. Has a diagnosis of immunodeficiency or is receiving systemic steroid therapy or any"
        " other form of immunosuppressive therapy within 7 days prior to the first dose of trial"
        " treatment.",
        "3. Has had a prior monoclonal antibody within 4 weeks prior to study Day 1 or who has"
        " not recovered (i.e., \u2264 Grade 1 or at baseline) from adverse events due to agents"
        " administered more than 4 weeks earlier.",
        "4. Has had prior chemotherapy or targeted small molecule therapy within 4 weeks prior to"
        " study Day 1 or who has not recovered (i.e., \u2264 Grade 1 or at baseline) from adverse"
        " events due to a previously administered agent.",
        "- Note: Subjects with \u2264 Grade 2 neuropathy are an exception to this criterion and"
        " may qualify for the study.",
        "- Note: If subjects received major surgery, they must have recovered adequately from the"
        " toxicity and/or complications from the intervention prior to starting therapy.",
        "5. Have had previous radical radiation to any tumor site within 6 months prior to study"
        " Day 1.",
        "6. Have known but untreated driver mutations of the EGFR gene or ALK translocation.",
        "7. Has a known additional malignancy that is progressing or requires active treatment."
        " Exceptions include basal cell carcinoma of the skin, squamous cell carcinoma of the"
        " skin, or in situ cervical cancer that has undergone potentially curative therapy. 8."
        " Has known active central nervous system (CNS) metastases and/or carcinomatous"
        " meningitis. Subjects with previously treated brain metastases may participate provided"
        " they are stable (without evidence of progression by imaging for at least six weeks"
        " prior to the first dose of trial treatment and any neurologic symptoms have returned"
        " to baseline), have no evidence of new or enlarging brain metastases, and are not using"
        " steroids for at least 14 days prior to trial treatment.",
        "9. Has an active autoimmune disease requiring systemic treatment within the past 3"
        " months or a documented history of clinically severe autoimmune disease, or a syndrome"
        " that requires systemic steroids or immunosuppressive agents. Subjects with vitiligo or"
        " resolved childhood asthma/atopy would be an exception to this rule. Subjects that"
        " require intermittent use of bronchodilators or local steroid injections would not be"
        " excluded from the study. Subjects with hypothyroidism stable on hormone replacement or"
        " Sj\u00f6gren's syndrome will not be excluded from the study.",
        "10. Has evidence of symptomatic interstitial lung disease or an active, non-infectious"
        " pneumonitis.",
        "11. Has an active infection requiring systemic therapy. 12. Has a history or current"
        " evidence of any condition, therapy, or laboratory abnormality that might confound the"
        " results of the trial, interfere with the subject's participation for the full duration"
        " of the trial, or is not in the best interest of the subject to participate, in the"
        " opinion of the treating investigator.",
        "13. Has known psychiatric or substance abuse disorders that would interfere with"
        " cooperation with the requirements of the trial.",
        "14. Is pregnant or breastfeeding, or expecting to conceive or father children within the"
        " projected duration of the trial, starting with the pre-screening or screening visit"
        " through 120 days after the last dose of trial treatment.",
        "15. Has received prior therapy with an anti-PD-1, anti-PD-L1, anti-PD-L2, anti-CD137, or"
        " anti-Cytotoxic T-lymphocyte-associated antigen-4 (CTLA-4) antibody (including"
        " ipilimumab or any other antibody or drug specifically targeting T-cell co-stimulation"
        " or checkpoint pathways).",
        "16. Has a known history of Human Immunodeficiency Virus (HIV) (HIV 1/2 antibodies).",
        "17. Has known active Hepatitis B (e.g., HBsAg reactive) or Hepatitis C (e.g., HCV RNA"
        " [qualitative] is detected).",
        "18. Has received a live vaccine within 30 days prior to the first dose of trial"
        " treatment.",
        "19. Has had major surgery or major blood transfusions (>3 packed cells) in the past 3"
        " months.",
    ]
)

PEMBRO_RT = {
    "protocolSection": {
        "identificationModule": {
            "nctId": "NCT02492568",
            "orgStudyIdInfo": {"id": "M14PRT"},
            "secondaryIdInfos": [{"id": "2014-003935-20"}, {"id": "NL51468.031.14"}],
            "organization": {"fullName": "The Netherlands Cancer Institute", "class": "OTHER"},
            "briefTitle": "Pembrolizumab After SBRT Versus Pembrolizumab Alone in Advanced NSCLC",
            "officialTitle": "Randomized Phase II, 2-arm Study of Pembrolizumab After High Dose"
            " Radiation (SBRT) Versus Pembrolizumab Alone in Patients With Advanced Non-small"
            " Cell Lung Cancer",
            "acronym": "PEMBRO-RT",
        },
        "statusModule": {
            "statusVerifiedDate": "2018-04",
            "overallStatus": "UNKNOWN",
            "lastKnownStatus": "ACTIVE_NOT_RECRUITING",
            "expandedAccessInfo": {"hasExpandedAccess": False},
            "startDateStruct": {"date": "2015-07"},
            "primaryCompletionDateStruct": {"date": "2018-06", "type": "ESTIMATED"},
            "completionDateStruct": {"date": "2018-06", "type": "ESTIMATED"},
            "studyFirstSubmitDate": "2015-06-29",
            "studyFirstSubmitQcDate": "2015-07-07",
            "studyFirstPostDateStruct": {"date": "2015-07-08", "type": "ESTIMATED"},
            "lastUpdateSubmitDate": "2018-04-09",
            "lastUpdatePostDateStruct": {"date": "2018-04-10", "type": "ACTUAL"},
        },
        "sponsorCollaboratorsModule": {
            "responsibleParty": {"type": "SPONSOR"},
            "leadSponsor": {"name": "The Netherlands Cancer Institute", "class": "OTHER"},
            "collaborators": [{"name": "Merck Sharp & Dohme Corp.", "class": "INDUSTRY"}],
        },
        "oversightModule": {"oversightHasDmc": True},
        "descriptionModule": {
            "briefSummary": "To evaluate the increase in Overall Response Rate (ORR) in the"
            " pembrolizumab alone arm compared to the pembrolizumab after SBRT arm at 12 weeks",
            "detailedDescription": "The investigators hypothesize that in a significant subset"
            " of patients with recurrent NSCLC immunotherapy after SBRT will be superior to"
            " treatment with immunotherapy alone and that SBRT, given to a single metastatic site"
            " of the tumor, will augment the immune response to the tumor. Objectives: Disease"
            " Control Rate (DCR), defined as the percentage of patients having a complete"
            " response, partial response or stable disease at 12 weeks, PFS, defined as time"
            " from randomization to disease progression or death, OS, defined as time from"
            " randomization to death (of any cause). Toxicity.",
        },
        "conditionsModule": {
            "conditions": ["Non-Small Cell Lung Cancer"],
            "keywords": ["recurrent", "NSCLC", "pembrolizumab", "SBRT"],
        },
        "designModule": {
            "studyType": "INTERVENTIONAL",
            "phases": ["PHASE2"],
            "designInfo": {
                "allocation": "RANDOMIZED",
                "interventionModel": "PARALLEL",
                "primaryPurpose": "TREATMENT",
                "maskingInfo": {"masking": "NONE"},
            },
            "enrollmentInfo": {"count": 92, "type": "ACTUAL"},
        },
        "armsInterventionsModule": {
            "armGroups": [
                {
                    "label": "SBRT + Pembrolizumab",
                    "type": "EXPERIMENTAL",
                    "description": "Stereotactic Body Radiation Therapy (SBRT) followed by"
                    " pembrolizumab treatment within 7 days of completion. SBRT: 3 x 8 Gy, given"
                    " 1-2 weeks prior to start of pembrolizumab. Dose of pembrolizumab is 200 mg,"
                    " every 3 weeks. Patients can continue the pembrolizumab treatment for"
                    " maximal 2 years.",
                    "interventionNames": [
                        "Drug: pembrolizumab",
                        "Radiation: Stereotactic Body Radiation Therapy",
                    ],
                },
                {
                    "label": "Pembrolizumab alone",
                    "type": "ACTIVE_COMPARATOR",
                    "description": "Dose of pembrolizumab is 200 mg, every 3 weeks.Patients can"
                    " continue the pembrolizumab treatment for maximal 2 years.",
                    "interventionNames": ["Drug: pembrolizumab"],
                },
            ],
            "interventions": [
                {
                    "type": "DRUG",
                    "name": "pembrolizumab",
                    "armGroupLabels": ["Pembrolizumab alone", "SBRT + Pembrolizumab"],
                    "otherNames": ["MK3475"],
                },
                {
                    "type": "RADIATION",
                    "name": "Stereotactic Body Radiation Therapy",
                    "armGroupLabels": ["SBRT + Pembrolizumab"],
                    "otherNames": ["SBRT"],
                },
            ],
        },
        "outcomesModule": {
            "primaryOutcomes": [
                {
                    "measure": "Overall Response Rate",
                    "description": "Patients having a partial response or complete response are"
                    " considered successes, while all other situations are considered failures.",
                    "timeFrame": "at 12 weeks",
                }
            ],
            "secondaryOutcomes": [
                {
                    "measure": "The percentage of patients having a complete response, partial"
                    " response or stable disease at 12 weeks",
                    "timeFrame": "at 12 weeks",
                },
                {
                    "measure": "Time from randomization to disease progression or death",
                    "timeFrame": "Until progression, median 5 months",
                },
                {
                    "measure": "Time from randomization to death (of any cause).",
                    "timeFrame": "every 12 weeks, median 5 months",
                },
                {
                    "measure": "Toxicity; Incidence of toxicity, graded according to National"
                    " Cancer Institute Common Toxicity Criteria (NCI-CTC) version 4.0",
                    "description": "Toxicity will be analyzed in patients who have received at"
                    " least one administration of pembrolizumab.",
                    "timeFrame": "up to 30 days after end of treatment",
                },
            ],
        },
        "eligibilityModule": {
            "eligibilityCriteria": PEMBRO_RT_CRITERIA,
            "healthyVolunteers": False,
            "sex": "ALL",
            "minimumAge": "18 Years",
            "stdAges": ["ADULT", "OLDER_ADULT"],
        },
        "contactsLocationsModule": {
            "locations": [
                {
                    "facility": "Antoni van Leeuwenhoek (NKI-AVL)",
                    "city": "Amsterdam",
                    "state": "Noord-Holland",
                    "zip": "1066 CX",
                    "country": "Netherlands",
                }
            ]
        },
    },
    "derivedSection": {
        "miscInfoModule": {"versionHolder": "2020-07-28"},
        "conditionBrowseModule": {
            "meshes": [{"term": "Lung Neoplasms"}, {"term": "Carcinoma, Non-Small-Cell Lung"}]
        },
        "interventionBrowseModule": {"meshes": [{"term": "Pembrolizumab"}]},
    },
    "hasResults": False,
}


def _leaves(value: object, prefix: str = "") -> dict[str, object]:
    """Every leaf of a nested dict/list as ``path -> value`` (to count and name differences)."""
    if isinstance(value, dict):
        out: dict[str, object] = {}
        for key, item in value.items():
            out.update(_leaves(item, f"{prefix}.{key}" if prefix else key))
        return out
    if isinstance(value, list) and value and isinstance(value[0], dict | list):
        out = {}
        for i, item in enumerate(value):
            out.update(_leaves(item, f"{prefix}[{i}]"))
        return out
    return {prefix: value}


def test_every_mapped_field_of_one_record(irt_dir: Path) -> None:
    """PEMBRO-RT (NCT02492568) against the hand-written API v2 dict above, leaf by leaf."""
    got = _leaves(read_legacy_xml(str(irt_dir / "NCT02492568.xml")))
    expected = _leaves(PEMBRO_RT)
    assert len(expected) >= 80
    assert sorted(set(got) ^ set(expected)) == []
    assert {k: got[k] for k in expected if got[k] != expected[k]} == {}
    # the store reads it as it reads an API v2 record
    rows = normalize_study(read_legacy_xml(str(irt_dir / "NCT02492568.xml")))
    study = rows["studies"][0]
    assert study["phases"] == ["PHASE2"] and study["has_dmc"] is True
    assert study["start_date_precision"] == "yyyy-mm"
    assert study["age_groups"] == ["ADULT", "OLDER_ADULT"]
    assert [s["sponsor_class"] for s in rows["sponsors"]] == ["OTHER", "INDUSTRY"]


# ------------------------------------------------------------------ values


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("July 15, 2016", "2016-07-15"),
        ("July 2016", "2016-07"),
        ("September 1, 2020", "2020-09-01"),
        ("2016", "2016"),
        ("", None),
        ("sometime soon", "sometime soon"),  # kept as given, never dropped silently
    ],
)
def test_legacy_dates_keep_their_precision(text: str, expected: str | None) -> None:
    assert legacy_date(text) == expected


@pytest.mark.parametrize(
    ("minimum", "maximum", "expected"),
    [
        ("18 Years", "N/A", ["ADULT", "OLDER_ADULT"]),
        ("N/A", "17 Years", ["CHILD"]),
        ("12 Years", "N/A", ["CHILD", "ADULT", "OLDER_ADULT"]),
        ("18 Years", "64 Years", ["ADULT"]),
        ("18 Years", "65 Years", ["ADULT", "OLDER_ADULT"]),
        ("65 Years", "N/A", ["OLDER_ADULT"]),
        ("6 Months", "216 Months", ["CHILD", "ADULT"]),
    ],
)
def test_age_groups_derived_from_age_limits(
    minimum: str, maximum: str, expected: list[str]
) -> None:
    assert std_ages(minimum, maximum) == expected


def test_age_groups_agree_with_the_registry(ctgov_dir: Path) -> None:
    """The derivation reproduces API v2's own stdAges on every shared record."""
    checked = 0
    for name in ("nsclc_150.json.gz", "tigit_1178.json.gz", "urology_635.json.gz"):
        with gzip.open(ctgov_dir / name) as handle:
            for study in orjson.loads(handle.read()):
                elig = study["protocolSection"].get("eligibilityModule") or {}
                if "stdAges" in elig:
                    derived = std_ages(elig.get("minimumAge"), elig.get("maximumAge"))
                    assert derived == elig["stdAges"], elig
                    checked += 1
    assert checked > 1900


def test_textblock_unwraps_paragraphs_and_keeps_list_items() -> None:
    text = """
        Radiotherapy with or without
        SBRT boost.

          1. First item that wraps
             onto a second line.
          2. Second item.
    """
    assert textblock(text) == (
        "Radiotherapy with or without SBRT boost.\n\n"
        "1. First item that wraps onto a second line.\n2. Second item."
    )


def test_every_legacy_enum_maps_into_the_api_v2_enums(ctgov_dir: Path) -> None:
    """Each table's targets are values of the matching enum in the registry's OpenAPI spec."""
    yaml = pytest.importorskip("yaml")
    spec = ctgov_dir / "spec" / "ctg-oas-v2.yaml"
    if not spec.is_file():
        pytest.skip(f"{spec} not found")
    schemas = yaml.safe_load(spec.read_text(encoding="utf-8"))["components"]["schemas"]
    tables = {
        "Status": _STATUS,
        "StudyType": _STUDY_TYPE,
        "DesignAllocation": _ALLOCATION,
        "InterventionalAssignment": _MODEL,
        "PrimaryPurpose": _PURPOSE,
        "DesignMasking": _MASKING,
        "WhoMasked": _WHO_MASKED,
        "ObservationalModel": _OBS_MODEL,
        "DesignTimePerspective": _TIME_PERSPECTIVE,
        "ArmGroupType": _ARM_TYPE,
        "InterventionType": _INTERVENTION_TYPE,
        "Sex": _SEX,
        "AgencyClass": _AGENCY_CLASS,
        "ResponsiblePartyType": _RESPONSIBLE,
        "OfficialRole": _OFFICIAL_ROLE,
        "DateType": _DATE_TYPE,
        "EnrollmentType": _DATE_TYPE,
        "SamplingMethod": _SAMPLING,
        "BioSpecRetention": _BIOSPEC,
        "IpdSharing": _IPD_SHARING,
        "IpdSharingInfoType": _IPD_INFO,
    }
    for schema, table in tables.items():
        allowed = set(schemas[schema]["enum"])
        assert set(table.values()) <= allowed, schema
    # every API v2 value that a legacy record can express is reached
    for schema, table in tables.items():
        if schema not in ("AgencyClass", "PrimaryPurpose"):
            assert set(table.values()) == set(schemas[schema]["enum"]) - {"NA"} | (
                {"NA"} & set(table.values())
            ), schema
    assert {p for phases in _PHASES.values() for p in phases} == set(schemas["Phase"]["enum"])
    assert _PHASES["Phase 1/Phase 2"] == ["PHASE1", "PHASE2"]
    assert _AGENCY_CLASS["U.S. Fed"] == "FED" and _STATUS["Active, not recruiting"] == (
        "ACTIVE_NOT_RECRUITING"
    )
    assert _MODEL["Single Group Assignment"] == "SINGLE_GROUP"


# ------------------------------------------------------------------ bad input

GOOD = b"""<?xml version="1.0" encoding="UTF-8"?>
<clinical_study>
  <required_header>
    <download_date>ClinicalTrials.gov processed this data on July 28, 2020</download_date>
  </required_header>
  <id_info><nct_id>NCT09999999</nct_id></id_info>
  <brief_title>A small synthetic record</brief_title>
  <overall_status>Recruiting</overall_status>
  <phase>Phase 1/Phase 2</phase>
  <study_type>Interventional</study_type>
  <sponsors>
    <lead_sponsor><agency>Agency</agency><agency_class>U.S. Fed</agency_class></lead_sponsor>
  </sponsors>
  <location>
    <facility><name>Site</name><address><city>Lyon</city><country>France</country></address>
    </facility>
    <status>Recruiting</status>
  </location>
  <clinical_results/>
</clinical_study>
"""

BOMB = b"""<?xml version="1.0"?>
<!DOCTYPE lolz [
 <!ENTITY lol "lol">
 <!ENTITY lol2 "&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;">
 <!ENTITY lol3 "&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;">
 <!ENTITY lol4 "&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;">
]>
<clinical_study><id_info><nct_id>NCT09999998</nct_id></id_info><brief_title>&lol4;</brief_title></clinical_study>
"""


def test_synthetic_record_values(tmp_path: Path) -> None:
    path = tmp_path / "NCT09999999.xml.gz"
    path.write_bytes(gzip.compress(GOOD))
    (entry,) = list(iter_file(path))
    study = orjson.loads(entry.raw)
    ps = study["protocolSection"]
    assert ps["designModule"]["phases"] == ["PHASE1", "PHASE2"]
    assert ps["sponsorCollaboratorsModule"]["leadSponsor"]["class"] == "FED"
    assert ps["contactsLocationsModule"]["locations"][0]["status"] == "RECRUITING"
    assert study["hasResults"] is True
    assert study["derivedSection"]["miscInfoModule"]["versionHolder"] == "2020-07-28"


def test_malformed_records_are_reported_and_skipped(irt_dir: Path, tmp_path: Path) -> None:
    folder = tmp_path / "records"
    folder.mkdir()
    source = (irt_dir / "NCT02492568.xml").read_bytes()
    (folder / "NCT02492568.xml").write_bytes(source)
    (folder / "truncated.xml").write_bytes(source[: len(source) // 2])
    (folder / "bomb.xml").write_bytes(BOMB)
    (folder / "other.xml").write_bytes(b"<?xml version='1.0'?><rss><channel/></rss>")
    (folder / "entity.xml").write_bytes(GOOD.replace(b"A small", b"&undefined; small"))
    with Store(tmp_path / "bad.duckdb") as store:
        report = import_paths(store, [folder])
        assert store.study_count() == 1
    failures = {Path(f.path).name: f for f in report.failures}
    assert sorted(failures) == ["bomb.xml", "entity.xml", "other.xml", "truncated.xml"]
    truncated = failures["truncated.xml"]
    assert truncated.nct_id == "NCT02492568"  # seen before the file broke off
    assert truncated.position.startswith("line ") and "malformed XML" in truncated.reason
    assert "DTD" in failures["bomb.xml"].reason
    assert "root element <rss>" in failures["other.xml"].reason
    assert failures["entity.xml"].nct_id == "NCT09999999"
    assert "undefined entity" in failures["entity.xml"].reason


def test_cli_reports_a_bad_file_and_imports_the_rest(irt_dir: Path, tmp_path: Path) -> None:
    bad = tmp_path / "bomb.xml"
    bad.write_bytes(BOMB)
    db = tmp_path / "c.duckdb"
    result = CliRunner().invoke(
        app, ["--quiet", "trials", "import", "--db", str(db), str(irt_dir / "NCT02492568.xml"),
              str(bad)],
    )  # fmt: skip
    assert result.exit_code == 1
    assert "bomb.xml" in result.output and "DTD" in result.output
    with Store(db) as store:
        assert store.study_count() == 1


# ------------------------------------------------------------------ versions across formats


def test_xml_then_json_gives_two_versions_newest_current(
    earlier_dir: Path, ctgov_dir: Path, tmp_path: Path
) -> None:
    with Store(tmp_path / "v.duckdb") as store:
        first = import_paths(store, [earlier_dir])
        assert first.failures == [] and first.new_studies == 20
        second = import_paths(store, [ctgov_dir / "nsclc_150.json.gz"])
        assert second.failures == []
        rows = store.con.execute(
            "SELECT nct_id, count(*), max(CASE WHEN is_current THEN version_holder END) "
            "FROM study_versions WHERE nct_id IN (SELECT nct_id FROM study_versions "
            "WHERE version_holder = '2020-07-28') GROUP BY nct_id"
        ).fetchall()
        assert len(rows) == 20
        with gzip.open(ctgov_dir / "nsclc_150.json.gz") as handle:
            holders = {
                s["protocolSection"]["identificationModule"]["nctId"]: s["derivedSection"][
                    "miscInfoModule"
                ]["versionHolder"]
                for s in orjson.loads(handle.read())
            }
        # two versions each; the current one is the API v2 record of 2025-12 (or later)
        assert {(nct, n, holder) for nct, n, holder in rows} == {
            (nct, 2, holders[nct]) for nct, _n, _h in rows
        }
        assert min(h for _nct, _n, h in rows) >= "2025-12"
        assert store.study_count() == 150
    # the other order: the 2025 record stays current when the 2020 one arrives later
    with Store(tmp_path / "w.duckdb") as store:
        import_paths(store, [ctgov_dir / "nsclc_150.json.gz"])
        later = import_paths(store, [earlier_dir])
        assert later.older_versions == 20
        (n_old,) = store.con.execute(
            "SELECT count(*) FROM study_versions WHERE is_current AND version_holder = '2020-07-28'"
        ).fetchone()
        assert n_old == 0


#: Fields whose value means the same in both formats; on these 20 trials none of them was
#: changed by the sponsor between 2020 and 2025, so XML and JSON must give the same row.
UNCHANGED_COLUMNS = (
    "study_type",
    "phases",
    "sex",
    "minimum_age",
    "age_groups",
    "healthy_volunteers",
    "first_submitted_date",
    "first_submitted_qc_date",
    "first_posted_date",
    "first_posted_date_type",
    "lead_sponsor_class",
    "organization_class",
    "has_dmc",
    "masking",
    "who_masked",
    "primary_purpose",
)


def _pairs(earlier_dir: Path, ctgov_dir: Path) -> list[tuple[dict, dict]]:
    with gzip.open(ctgov_dir / "nsclc_150.json.gz") as handle:
        by_id = {s["protocolSection"]["identificationModule"]["nctId"]: s
                 for s in orjson.loads(handle.read())}  # fmt: skip
    return [
        (normalize_study(read_legacy_xml(str(path))), normalize_study(by_id[path.stem]))
        for path in sorted(earlier_dir.glob("*.xml"))
    ]


def test_unchanged_fields_give_identical_rows_in_both_formats(
    earlier_dir: Path, ctgov_dir: Path
) -> None:
    pairs = _pairs(earlier_dir, ctgov_dir)
    assert len(pairs) == 20
    for xml_rows, json_rows in pairs:
        old, new = xml_rows["studies"][0], json_rows["studies"][0]
        assert {c: old[c] for c in UNCHANGED_COLUMNS} == {c: new[c] for c in UNCHANGED_COLUMNS}
        # lead sponsor row: same class (one of the 20 was renamed after an acquisition)
        assert xml_rows["sponsors"][0]["sponsor_class"] == json_rows["sponsors"][0]["sponsor_class"]
        for prefix in ("start_date", "primary_completion_date", "completion_date"):
            # same precision whenever the date itself is unchanged
            if old[prefix] == new[prefix]:
                assert old[f"{prefix}_precision"] == new[f"{prefix}_precision"]


def test_records_unchanged_since_2020_are_the_same_rows(earlier_dir: Path, ctgov_dir: Path) -> None:
    """Records whose last update predates the 2020 dump: every row agrees except what the
    registry itself changed since (the derived "unknown status", renamed Chinese provinces)
    and what only API v2 carries (location recruitment status, markdown in descriptions,
    secondary-id types)."""
    same = [
        (old, new)
        for old, new in _pairs(earlier_dir, ctgov_dir)
        if old["studies"][0]["last_update_posted_date"]
        == new["studies"][0]["last_update_posted_date"]
    ]
    assert len(same) == 5
    registry_side = {"overall_status", "last_known_status"}
    for old, new in same:
        a, b = old["studies"][0], new["studies"][0]
        assert {k: v for k, v in a.items() if k not in registry_side} == {
            k: v for k, v in b.items() if k not in registry_side
        }
        for table in ("sponsors", "conditions", "keywords", "aliases"):
            assert old[table] == new[table], table
        pick = {
            "interventions": ("intervention_type", "name", "other_names", "arm_group_labels"),
            "arm_groups": ("label", "arm_type", "intervention_names"),
            "locations": ("facility", "city", "zip", "country"),
            "secondary_ids": ("secondary_id",),
        }
        for table, columns in pick.items():
            assert [[r[c] for c in columns] for r in old[table]] == [
                [r[c] for c in columns] for r in new[table]
            ], table
