"""Classifiers on real record snippets: value + evidence + confidence per variable."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import pytest

from irtscope.trials import classify_studies, load_overrides

SINGLE = [
    "period",
    "registration_year",
    "age_groups",
    "stage",
    "sponsor_type",
    "funder_type",
    "region",
    "multi_region",
    "status",
    "has_results",
    "phase",
    "centres",
    "enrollment",
    "enrollment_bin",
    "primary_purpose",
    "allocation",
    "intervention_model",
    "masking",
    "dmc",
    "innovation_major_count",
]


def study(nct: str = "NCT09000001", **ps: object) -> dict:
    base: dict = {
        "identificationModule": {"nctId": nct, "briefTitle": "Trial"},
        "statusModule": {"studyFirstSubmitDate": "2019-05-16", "overallStatus": "RECRUITING"},
        "designModule": {"studyType": "INTERVENTIONAL"},
    }
    for key, value in ps.items():
        base[key] = value
    return {"protocolSection": base, "hasResults": False}


def values(frame, variable: str, nct: str = "NCT09000001") -> list[str]:
    rows = frame[(frame["nct_id"] == nct) & (frame["variable"] == variable)]
    return list(rows["value"])


def one(s: dict, variable: str) -> list[str]:
    return values(classify_studies([s], "nsclc-irt"), variable)


def test_long_form_contract() -> None:
    frame = classify_studies([study()], "nsclc-irt")
    assert list(frame.columns[:6]) == [
        "nct_id",
        "variable",
        "value",
        "field",
        "evidence",
        "confidence",
    ]
    for variable in SINGLE:
        assert len(values(frame, variable)) == 1, variable
    assert values(frame, "stage") == ["not reported"]
    assert values(frame, "ici_drug") == [] and values(frame, "country") == []
    assert values(frame, "period") == ["2018-2020"]
    assert frame["confidence"].between(0, 1).all()


@pytest.mark.parametrize(
    ("phases", "expected"),
    [
        (["PHASE1", "PHASE2"], "1/2"),
        (["PHASE2", "PHASE3"], "2/3"),
        (["EARLY_PHASE1"], "early 1"),
        (["NA"], "NA"),
        (["PHASE3"], "3"),
    ],
)
def test_phase(phases: list[str], expected: str) -> None:
    s = study(designModule={"studyType": "INTERVENTIONAL", "phases": phases})
    assert one(s, "phase") == [expected]


@pytest.mark.parametrize(
    ("count", "expected"),
    [(29, "<50"), (50, "50-99"), (199, "100-199"), (200, "200-499"), (1005, ">=500")],
)
def test_enrollment(count: int, expected: str) -> None:
    s = study(designModule={"enrollmentInfo": {"count": count}})
    frame = classify_studies([s], "nsclc-irt")
    assert values(frame, "enrollment_bin") == [expected]
    assert values(frame, "enrollment") == [str(count)]


def test_design_and_status_fields() -> None:
    s = study(
        statusModule={
            "studyFirstSubmitDate": "2016",
            "overallStatus": "ACTIVE_NOT_RECRUITING",
            "whyStopped": "Slow accrual",
        },
        designModule={
            "designInfo": {
                "allocation": "RANDOMIZED",
                "interventionModel": "PARALLEL",
                "primaryPurpose": "SUPPORTIVE_CARE",
                "maskingInfo": {"masking": "QUADRUPLE"},
            }
        },
        oversightModule={"oversightHasDmc": True},
        eligibilityModule={"stdAges": ["ADULT", "OLDER_ADULT"]},
        sponsorCollaboratorsModule={"leadSponsor": {"name": "AstraZeneca", "class": "INDUSTRY"}},
    )
    frame = classify_studies([s], "nsclc-irt")
    expected = {
        "status": "active not recruiting",
        "allocation": "randomised",
        "intervention_model": "parallel",
        "primary_purpose": "supportive care",
        "masking": "quadruple",
        "dmc": "yes",
        "age_groups": "adult+older adult",
        "funder_type": "industry",
        "sponsor_type": "company",
        "why_stopped": "slow accrual",
        "period": "2014-2017",
        "registration_year": "2016",
        "has_results": "no",
    }
    for variable, value in expected.items():
        assert values(frame, variable) == [value], variable


@pytest.mark.parametrize(
    ("why", "category"),
    [
        ("insufficient subjects recruited in allotted time", "slow accrual"),
        ("Business objectives have changed", "sponsor strategy"),
        ("Unacceptable toxicity in the first cohort", "safety"),
        ("The funder never paid for the study.", "funding"),
        ("Study terminated due to the COVID-19 pandemic", "competing study/delay"),
        ("Completed", "other"),
    ],
)
def test_why_stopped(why: str, category: str) -> None:
    assert one(
        study(statusModule={"overallStatus": "TERMINATED", "whyStopped": why}), "why_stopped"
    ) == [category]


@pytest.mark.parametrize(
    ("name", "klass", "expected"),
    [
        ("Sun Yat-sen University", "OTHER", "university"),
        ("Peking University Cancer Hospital & Institute", "OTHER", "hospital"),
        ("NRG Oncology", "NETWORK", "oncology cooperative group"),
        ("Groupe Francais De Pneumo-Cancerologie", "OTHER", "oncology cooperative group"),
        ("National Cancer Institute (NCI)", "NIH", "research institution"),
        ("Fondazione Ricerca Traslazionale", "OTHER", "foundation"),
        ("Jiangsu HengRui Medicine Co., Ltd.", "INDUSTRY", "company"),
        ("Assistance Publique - Hôpitaux de Paris", "OTHER", "hospital"),
    ],
)
def test_sponsor_type(name: str, klass: str, expected: str) -> None:
    s = study(sponsorCollaboratorsModule={"leadSponsor": {"name": name, "class": klass}})
    assert one(s, "sponsor_type") == [expected]


def test_sponsor_individual_uses_affiliation() -> None:
    s = study(
        sponsorCollaboratorsModule={
            "leadSponsor": {"name": "Jie Li", "class": "OTHER"},
            "responsibleParty": {"investigatorAffiliation": "Shanxi Province Cancer Hospital"},
        }
    )
    assert one(s, "sponsor_type") == ["hospital"]


def test_region_countries_and_spellings() -> None:
    locations = [
        {"facility": f"Site {i}", "country": c}
        for i, c in enumerate(
            ["Korea, Republic of", "South Korea", "Türkiye", "USA", "United States", "Japan"]
        )
    ]
    frame = classify_studies([study(contactsLocationsModule={"locations": locations})], "nsclc-irt")
    assert sorted(values(frame, "country")) == [
        "Japan",
        "Korea, Republic of",
        "Turkey",
        "United States",
    ]
    assert values(frame, "region") == ["Asia"]  # 4 of 6 sites
    assert values(frame, "multi_region") == ["yes"]
    assert values(frame, "centres") == ["multi"]


def test_region_tie_goes_to_first_site_and_missing() -> None:
    locations = [{"facility": "A", "country": "Germany"}, {"facility": "B", "country": "Canada"}]
    assert one(study(contactsLocationsModule={"locations": locations}), "region") == ["Europe"]
    frame = classify_studies([study()], "nsclc-irt")
    assert values(frame, "region") == ["not reported"]
    assert values(frame, "centres") == ["not reported"]


@pytest.mark.parametrize(
    ("conditions", "title", "eligibility", "expected"),
    [
        (["NSCLC"], "Durvalumab in Unresectable Stage III NSCLC", "", "III"),
        (["NSCLC"], "Pembrolizumab in Stage IIIB or IV NSCLC", "", "III-IV"),
        (["NSCLC"], "Toripalimab After Resection in High-risk Stage IA2-IB NSCLC", "", "I"),
        (["NSCLC", "II-IIIA"], "Camrelizumab Adjuvant for Stage II-IIIA NSCLC", "", "II-III"),
        (["NSCLC"], "SBRT for Oligoprogressive NSCLC", "", "oligoprogressive"),
        (["NSCLC"], "SBRT in oligometastatic NSCLC", "", "oligometastatic/oligoprogressive"),
        (["NSCLC", "Brain Metastases"], "SRS and nivolumab", "", "brain/leptomeningeal metastasis"),
        (
            ["NSCLC"],
            "Durvalumab",
            "Inclusion Criteria:\n* Stage IV NSCLC\nExclusion Criteria:\n* stage III",
            "IV",
        ),
        (["NSCLC"], "Locally advanced NSCLC", "", "III"),
        (["NSCLC"], "Chemo for non-metastatic NSCLC", "", "not reported"),
        # NCT07050056: a vague title/condition phrase yields to the explicit eligible range
        (
            ["Resectable NSCLC"],
            "Tislelizumab Combined With Thoracic Radiotherapy as Neoadjuvant Therapy for "
            "Resectable NSCLC",
            "Inclusion Criteria:\n* Previously untreated, histologically confirmed resectable "
            "stage IB-IIIA NSCLC (AJCC 9th edition staging);",
            "I-III",
        ),
        # sub-stage letter lists, parentheticals and bare spaces inside one stage mention
        # (NCT04646330, NCT05693090, NCT04736173)
        (
            ["NSCLC"],
            "AK104",
            "* cytologically-confirmed diagnosis of StageIIIB/C or IV NSCLC.",
            "III-IV",
        ),
        (
            ["NSCLC"],
            "Tipifarnib",
            "* confirmed stage IIIB (locally-advanced) or IV (metastatic) adenocarcinoma",
            "III-IV",
        ),
        (
            ["NSCLC"],
            "Domvanalimab",
            "* locally advanced or metastatic (stage IIIB IV per AJCC version 8)",
            "III-IV",
        ),
        # a word in a parenthetical is not a stage ("(metastatic)" holds no stage "ic")
        (["NSCLC"], "X", "* stage IV (metastatic) NSCLC", "IV"),
    ],
)
def test_stage(conditions: list[str], title: str, eligibility: str, expected: str) -> None:
    s = study(
        identificationModule={"nctId": "NCT09000001", "briefTitle": title},
        conditionsModule={"conditions": conditions},
        eligibilityModule={"eligibilityCriteria": eligibility},
    )
    assert one(s, "stage") == [expected]


def _arms(*interventions: dict, title: str = "Trial", **extra: object) -> dict:
    return study(
        identificationModule={"nctId": "NCT09000001", "briefTitle": title},
        armsInterventionsModule={"interventions": list(interventions)},
        **extra,
    )


def test_ici_drugs_codes_targets_and_placebo() -> None:
    # shape of NCT04746924: comparator pembrolizumab + placebo, tislelizumab via its code
    s = _arms(
        {"type": "DRUG", "name": "BGB-A317"},
        {"type": "DRUG", "name": "Pembrolizumab", "otherNames": ["KEYTRUDA"]},
        {"type": "DRUG", "name": "Placebo matching ipilimumab"},
        {"type": "DRUG", "name": "Ociperlimab", "otherNames": ["BGB-A1217"]},
    )
    frame = classify_studies([s], "nsclc-irt")
    assert sorted(values(frame, "ici_drug")) == ["pembrolizumab", "tislelizumab"]
    assert values(frame, "ici_target") == ["PD-1"]


def test_structured_fields_outrank_summary() -> None:
    s = _arms(
        {"type": "DRUG", "name": "Durvalumab", "otherNames": ["MEDI4736"]},
        descriptionModule={"briefSummary": "Unlike KEYNOTE trials of pembrolizumab..."},
    )
    assert one(s, "ici_drug") == ["durvalumab"]
    fallback = study(
        identificationModule={
            "nctId": "NCT09000001",
            "briefTitle": "Real-world durvalumab after CRT",
        }
    )
    assert one(fallback, "ici_drug") == ["durvalumab"]


@pytest.mark.parametrize(
    ("text", "technology", "dose"),
    [
        ("SBRT 8 Gy x 3 fractions", ["stereotactic RT"], ["hypofractionated"]),
        ("A total dose of 66 Gy will be given in 24 fractions", [], ["hypofractionated"]),
        ("60 Gy in 30 fractions of 3D-CRT or IMRT", [], []),
        (
            "Stereotactic radiosurgery (SRS) to brain lesions",
            ["stereotactic RT"],
            ["single fraction"],
        ),
        ("Low-dose radiotherapy 2 Gy x 2 to all lesions", [], ["low-dose RT"]),
        ("Proton beam therapy 60 Gy(RBE)", ["proton/heavy-ion therapy"], []),
        ("Accelerated hyperfractionated radiotherapy 45 Gy twice daily", [], ["hyperfractionated"]),
        ("MR-guided adaptive radiotherapy", ["image-guided RT"], []),
        # a hyperfractionated schedule read from its numbers alone (1.5 Gy per fraction)
        ("Thoracic radiotherapy 45 Gy in 30 fractions, twice daily", [], ["hyperfractionated"]),
        ("Concurrent chemoradiotherapy 60 Gy in 30 fractions", [], []),
        ("Radiotherapy 50.4 Gy in 28 fractions of 1.8 Gy", [], []),
    ],
)
def test_radiotherapy_categories(text: str, technology: list[str], dose: list[str]) -> None:
    s = _arms({"type": "RADIATION", "name": "Radiotherapy", "description": text})
    frame = classify_studies([s], "nsclc-irt")
    assert sorted(values(frame, "rt_technology")) == technology
    assert sorted(values(frame, "rt_dose")) == dose


def test_drug_dosing_words_are_not_radiotherapy_dose() -> None:
    # shape of NCT05009069: capecitabine "twice daily (bid) ... during radiotherapy"
    s = _arms(
        {
            "type": "RADIATION",
            "name": "Radiotherapy",
            "description": "45-50.4Gy in 25-28 fractions to the pelvis",
        },
        {
            "type": "DRUG",
            "name": "Capecitabine",
            "description": "825 mg/m^2 orally twice daily (bid) during radiotherapy; "
            "dose escalation of capecitabine in phase 1",
        },
    )
    assert one(s, "rt_dose") == []


def test_no_radiotherapy_no_rt_categories() -> None:
    s = _arms(
        {"type": "DRUG", "name": "Pembrolizumab"},
        descriptionModule={
            "briefSummary": "Patients without prior SBRT; hypofractionated regimens are excluded"
        },
    )
    frame = classify_studies([s], "nsclc-irt")
    assert values(frame, "rt_technology") == [] and values(frame, "rt_dose") == []


def test_population_and_innovation_count() -> None:
    s = _arms(
        {"type": "RADIATION", "name": "SBRT", "description": "SBRT to all oligometastatic sites"},
        {"type": "DRUG", "name": "Pembrolizumab"},
        title="SBRT plus pembrolizumab for elderly patients with PD-L1 ≥50% oligometastatic NSCLC",
        descriptionModule={"briefSummary": "Patients with brain metastases are excluded."},
    )
    frame = classify_studies([s], "nsclc-irt")
    assert values(frame, "pop_metastatic_site") == [
        "oligometastatic/oligoprogressive/oligoresidual"
    ]
    assert sorted(values(frame, "pop_patient_status")) == ["PD-L1 status", "elderly"]
    assert values(frame, "innovation_major_count") == ["4"]  # technology, dose, site, status
    evidence = frame[frame["variable"] == "rt_technology"].iloc[0]
    assert "SBRT" in evidence["evidence"] and evidence["field"].startswith("armsInterventions")


def test_class_overrides() -> None:
    table = load_overrides(
        [
            {
                "nct_id": "NCT09000001",
                "variable": "stage",
                "value": "IV",
                "reason": "record says M1",
                "reviewer": "AB",
                "date": "2024-07-01",
            }
        ]
    )
    frame = classify_studies([study()], "nsclc-irt", overrides=table)
    row = frame[frame["variable"] == "stage"].iloc[0]
    assert row["value"] == "IV" and bool(row["overridden"]) and "AB" in row["field"]


def test_real_records(ctgov_dir: Path) -> None:
    with gzip.open(ctgov_dir / "nsclc_150.json.gz", "rt", encoding="utf-8") as fh:
        studies = json.load(fh)
    frame = classify_studies(studies, "nsclc-irt")
    counts = frame[frame["variable"].isin(SINGLE)].groupby(["nct_id", "variable"]).size()
    assert (counts == 1).all() and len(counts) == len(studies) * len(SINGLE)
    by_id = {(r.nct_id, r.variable): r.value for r in frame.itertuples()}
    assert by_id[("NCT03955198", "stage")] == "oligometastatic/oligoprogressive"
    assert by_id[("NCT03955198", "ici_drug")] == "durvalumab"
    assert by_id[("NCT03955198", "rt_technology")] == "stereotactic RT"


def test_class_override_unknown_variable() -> None:
    from irtscope import ConfigError

    table = load_overrides(
        [
            {
                "nct_id": "NCT09000001",
                "variable": "stgae",
                "value": "IV",
                "reason": "typo",
                "reviewer": "AB",
                "date": "2024-07-01",
            }
        ]
    )
    with pytest.raises(ConfigError, match="stgae"):
        classify_studies([study()], "nsclc-irt", overrides=table)
