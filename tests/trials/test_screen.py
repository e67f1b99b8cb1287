"""Screening: one decision per trial, first failing criterion, evidence for every rule."""

from __future__ import annotations

import copy
import gzip
import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from irtscope import ConfigError
from irtscope.cli import app
from irtscope.trials import (
    Store,
    load_overrides,
    load_protocol,
    record_overrides,
    record_screening,
    screen_studies,
)
from irtscope.trials._screen import parse_partial_date

CRITERIA = [c.id for c in load_protocol("nsclc-irt").criteria]


def _load(ctgov_dir: Path, name: str) -> list[dict]:
    with gzip.open(ctgov_dir / f"{name}.json.gz", "rt", encoding="utf-8") as fh:
        return json.load(fh)


def irt_study(nct: str = "NCT09000001", **changes: object) -> dict:
    """A minimal iRT record in API v2 shape (phrases from NCT03955198 and NCT07050056)."""
    study = {
        "protocolSection": {
            "identificationModule": {
                "nctId": nct,
                "briefTitle": "Stereotactic Radiotherapy Plus Durvalumab in NSCLC",
                "officialTitle": "A Multicentric Phase II Trial of Stereotactic Radiotherapy Plus "
                "Durvalumab Continuation for Patients With NSCLC Oligometastatic Disease",
                "orgStudyIdInfo": {"id": f"ORG-{nct}"},
            },
            "statusModule": {"studyFirstSubmitDate": "2019-05-16", "overallStatus": "RECRUITING"},
            "sponsorCollaboratorsModule": {
                "leadSponsor": {"name": "Institut Claudius Regaud", "class": "OTHER"}
            },
            "conditionsModule": {"conditions": ["NSCLC"]},
            "designModule": {"studyType": "INTERVENTIONAL", "phases": ["PHASE2"]},
            "armsInterventionsModule": {
                "interventions": [
                    {
                        "type": "COMBINATION_PRODUCT",
                        "name": "Radiotherapy + durvalumab",
                        "description": "Radiotherapy will be administered in combination with "
                        "Durvalumab",
                    }
                ],
            },
            "outcomesModule": {"primaryOutcomes": [{"measure": "Progression-free survival"}]},
        },
        "hasResults": False,
    }
    for path, value in changes.items():
        node = study["protocolSection"]
        *parents, leaf = path.split("__")
        for p in parents:
            node = node.setdefault(p, {})
        node[leaf] = value
    return study


def _decision(frame, nct: str) -> tuple[str, str]:
    row = frame.set_index("nct_id").loc[nct]
    return row["decision"], row["reason"]


def test_contract_columns_and_included() -> None:
    frame = screen_studies([irt_study()], "nsclc-irt")
    for column in (
        "nct_id",
        "decision",
        "step",
        "reason",
        "reason_label",
        "evidence",
        "overridden",
        "registration_date",
        "registration_year",
    ):
        assert column in frame.columns
    row = frame.iloc[0]
    assert (row["decision"], row["step"], row["reason"]) == ("included", 0, "")
    assert row["registration_year"] == 2019
    rules = {e["rule"] for e in json.loads(row["evidence"])}
    assert rules == set(CRITERIA)  # evidence for every rule


@pytest.mark.parametrize(
    ("changes", "reason"),
    [
        ({"statusModule__studyFirstSubmitDate": "2013-11-02"}, "outside_window"),
        ({"statusModule__studyFirstSubmitDate": "2024-07"}, "outside_window"),
        ({"designModule__studyType": "OBSERVATIONAL"}, "not_interventional"),
        ({"designModule__studyType": "EXPANDED_ACCESS"}, "not_interventional"),
        (
            {
                "conditionsModule__conditions": ["Small Cell Lung Cancer"],
                "identificationModule__briefTitle": "SBRT and durvalumab",
                "identificationModule__officialTitle": "",
            },
            "not_nsclc",
        ),
        (
            {
                "armsInterventionsModule__interventions": [
                    {"type": "RADIATION", "name": "SBRT"},
                    {"type": "DRUG", "name": "Durvalumab"},
                    {"type": "BIOLOGICAL", "name": "GM-CSF", "otherNames": ["sargramostim"]},
                ]
            },
            "other_immunotherapy",
        ),
        (
            {
                "armsInterventionsModule__interventions": [
                    {"type": "RADIATION", "name": "SBRT"},
                    {"type": "DRUG", "name": "Durvalumab"},
                    {"type": "DEVICE", "name": "Regional hyperthermia"},
                ]
            },
            "other_combined_therapy",
        ),
        (
            {
                "identificationModule__briefTitle": "Durvalumab in NSCLC",
                "identificationModule__officialTitle": "Durvalumab without radiotherapy",
                "armsInterventionsModule__interventions": [{"type": "DRUG", "name": "Durvalumab"}],
            },
            "no_radiotherapy",
        ),
        (
            {
                "identificationModule__briefTitle": "SBRT in NSCLC",
                "identificationModule__officialTitle": "",
                "armsInterventionsModule__interventions": [
                    {"type": "RADIATION", "name": "SBRT"},
                    {"type": "DRUG", "name": "Docetaxel"},
                ],
            },
            "no_immunotherapy",
        ),
        (
            {"outcomesModule__primaryOutcomes": [{"measure": "Quality of life (EORTC QLQ-C30)"}]},
            "aim_quality_of_life",
        ),
        (
            {
                "outcomesModule__primaryOutcomes": [
                    {"measure": "Change in ctDNA levels"},
                    {"measure": "Liquid biopsy concordance"},
                ]
            },
            "aim_biomarker",
        ),
        (
            {
                "identificationModule__briefTitle": "Patient-derived organoids to guide SBRT and "
                "durvalumab in NSCLC"
            },
            "aim_organoid",
        ),
    ],
)
def test_each_criterion(changes: dict, reason: str) -> None:
    frame = screen_studies([irt_study(**changes)], "nsclc-irt")
    row = frame.iloc[0]
    assert (row["decision"], row["reason"]) == ("excluded", reason)
    assert row["step"] == CRITERIA.index(reason) + 1
    evidence = json.loads(row["evidence"])
    assert any(e["rule"] == reason and e["field"] and e["text"] for e in evidence)


def test_study_type_and_window_are_separate() -> None:
    """Non-interventional studies get their own reason; the window is the date alone."""
    observational_2013 = irt_study(
        "NCT09000002",
        designModule__studyType="OBSERVATIONAL",
        statusModule__studyFirstSubmitDate="2013-01-05",
    )
    frame = screen_studies([observational_2013], "nsclc-irt")
    assert _decision(frame, "NCT09000002") == ("excluded", "not_interventional")
    assert frame.iloc[0]["reason_label"] == "Not an interventional study"
    # a protocol without a study_type criterion (written before it existed) still keeps
    # other study types out, under its window criterion
    preset = load_protocol("nsclc-irt")
    legacy = preset.model_copy(
        update={"criteria": tuple(c for c in preset.criteria if c.rule != "study_type")}
    )
    observational = irt_study("NCT09000003", designModule__studyType="OBSERVATIONAL")
    frame = screen_studies([observational, irt_study("NCT09000004")], legacy)
    assert _decision(frame, "NCT09000003") == ("excluded", "outside_window")
    assert _decision(frame, "NCT09000004") == ("included", "")


@pytest.mark.parametrize(
    "name",
    [
        "LM-108 antibody and sintilimab",  # NCT06479759 (anti-CCR8, code name only)
        "RO7502175",  # NCT05581004 (anti-CCR8, code name only)
    ],
)
def test_code_named_other_immunotherapy(name: str) -> None:
    study = irt_study(
        armsInterventionsModule__interventions=[
            {"type": "RADIATION", "name": "SBRT"},
            {"type": "DRUG", "name": name},
            {"type": "DRUG", "name": "Pembrolizumab"},
        ]
    )
    frame = screen_studies([study], "nsclc-irt")
    assert _decision(frame, "NCT09000001") == ("excluded", "other_immunotherapy")


def test_chemotherapy_next_to_ici_does_not_exclude() -> None:
    study = irt_study(
        armsInterventionsModule__interventions=[
            {"type": "RADIATION", "name": "Thoracic radiotherapy"},
            {"type": "DRUG", "name": "Pembrolizumab", "otherNames": ["MK-3475"]},
            {"type": "DRUG", "name": "Carboplatin"},
            {"type": "DRUG", "name": "Pemetrexed"},
        ]
    )
    assert _decision(screen_studies([study], "nsclc-irt"), "NCT09000001") == ("included", "")


def test_negated_radiotherapy_does_not_count() -> None:
    study = irt_study(
        identificationModule__briefTitle="Durvalumab in NSCLC",
        identificationModule__officialTitle="",
        descriptionModule={
            "briefSummary": "Patients with no prior radiotherapy receive durvalumab."
        },
        armsInterventionsModule__interventions=[{"type": "DRUG", "name": "Durvalumab"}],
    )
    frame = screen_studies([study], "nsclc-irt")
    assert frame.iloc[0]["reason"] == "no_radiotherapy"
    assert "negated" in frame.iloc[0]["evidence"]


def test_treatment_after_a_negated_clause_counts() -> None:
    # "not eligible for surgery" must not negate the SBRT the trial gives in the same sentence
    s = irt_study(
        identificationModule__briefTitle="Durvalumab in Early-stage NSCLC",
        identificationModule__officialTitle="Durvalumab in Early-stage NSCLC",
        armsInterventionsModule__interventions=[
            {
                "type": "DRUG",
                "name": "Durvalumab",
                "description": "Patients not eligible for surgery will receive stereotactic "
                "body radiotherapy (SBRT) and durvalumab 1500 mg every 4 weeks.",
            }
        ],
    )
    frame = screen_studies([s], load_protocol("nsclc-irt"))
    assert _decision(frame, "NCT09000001") == ("included", "")


def test_placebo_only_ici_is_no_immunotherapy() -> None:
    study = irt_study(
        identificationModule__briefTitle="SBRT in NSCLC",
        identificationModule__officialTitle="",
        armsInterventionsModule__interventions=[
            {"type": "RADIATION", "name": "SBRT"},
            {"type": "DRUG", "name": "Placebo matching durvalumab"},
        ],
    )
    assert screen_studies([study], "nsclc-irt").iloc[0]["reason"] == "no_immunotherapy"


def test_duplicates() -> None:
    a = irt_study("NCT09000001")
    b = irt_study("NCT09000002", statusModule__studyFirstSubmitDate="2020-01-03")
    frame = screen_studies([b, a, copy.deepcopy(a), {"protocolSection": {}}], "nsclc-irt")
    reasons = list(frame["reason"])
    # b repeats a's official title under another NCT id and was registered later
    assert reasons == ["duplicate_content", "", "duplicate_record", "duplicate_record"]
    assert "NCT09000001" in frame.iloc[0]["evidence"]


def test_partial_dates() -> None:
    assert parse_partial_date("2014") == (
        parse_partial_date("2014-01-01")[0],
        parse_partial_date("2014-12-31")[0],
    )
    assert parse_partial_date("2024-02")[1].day == 29
    assert parse_partial_date("garbage") is None and parse_partial_date(None) is None
    frame = screen_studies([irt_study(statusModule__studyFirstSubmitDate="2024-06")], "nsclc-irt")
    assert frame.iloc[0]["decision"] == "included"
    assert frame.iloc[0]["registration_year"] == 2024


def test_nsclc_150_every_trial_decided(ctgov_dir: Path) -> None:
    studies = _load(ctgov_dir, "nsclc_150")
    frame = screen_studies(studies, "nsclc-irt")
    assert len(frame) == len(studies) == frame["nct_id"].nunique()
    assert set(frame["decision"]) <= {"included", "excluded"}
    excluded = frame[frame["decision"] == "excluded"]
    assert set(excluded["reason"]) <= set(CRITERIA)
    assert (excluded["step"] >= 1).all()
    for evidence in frame["evidence"]:
        items = json.loads(evidence)
        assert items and all({"rule", "field", "text"} <= set(i) for i in items)
    # hand-checked calls (see the closing note)
    assert _decision(frame, "NCT03955198") == ("included", "")
    assert _decision(frame, "NCT05798663") == ("excluded", "other_immunotherapy")
    assert _decision(frame, "NCT03798535") == ("excluded", "not_interventional")  # observational
    assert _decision(frame, "NCT07050056") == ("excluded", "outside_window")  # 2025
    assert _decision(frame, "NCT02385136") == ("excluded", "no_immunotherapy")
    assert _decision(frame, "NCT02369484") == ("excluded", "no_radiotherapy")


def test_duplicate_record_in_real_fixture(ctgov_dir: Path) -> None:
    studies = _load(ctgov_dir, "aact_fixtures_13")
    frame = screen_studies(studies, "nsclc-irt")
    assert (frame["reason"] == "duplicate_record").sum() >= 1


def test_overrides_csv(tmp_path: Path) -> None:
    path = tmp_path / "overrides.csv"
    path.write_text(
        "nct_id,variable,value,reason,reviewer,date\n"
        "NCT09000001,decision,no_immunotherapy,durvalumab only in a sub-study,AB,2024-07-01\n",
        encoding="utf-8",
    )
    table = load_overrides(path)
    frame = screen_studies([irt_study()], "nsclc-irt", overrides=table)
    row = frame.iloc[0]
    assert (row["decision"], row["reason"], bool(row["overridden"])) == (
        "excluded",
        "no_immunotherapy",
        True,
    )
    last = json.loads(row["evidence"])[-1]
    assert last["rule"] == "override" and "AB" in last["field"] and "sub-study" in last["text"]
    with Store(":memory:") as store:
        run = record_screening(store.con, frame, load_protocol("nsclc-irt"))
        assert record_overrides(store.con, table, str(path)) == 1
        assert (
            store.con.execute(
                "SELECT count(*) FROM screen_decisions WHERE run_id = ?", [run]
            ).fetchone()[0]
            == 1
        )
        audit = store.con.execute("SELECT reviewer, reason FROM review_overrides").fetchall()
        assert audit == [("AB", "durvalumab only in a sub-study")]


@pytest.mark.parametrize(
    ("row", "message"),
    [
        (
            {
                "nct_id": "NCT123",
                "value": "included",
                "reason": "r",
                "reviewer": "x",
                "date": "2024-01-01",
            },
            "nct_id",
        ),
        (
            {
                "nct_id": "NCT09000001",
                "value": "included",
                "reason": "",
                "reviewer": "x",
                "date": "2024-01-01",
            },
            "reason",
        ),
        (
            {
                "nct_id": "NCT09000001",
                "value": "included",
                "reason": "r",
                "reviewer": "x",
                "date": "01/02/2024",
            },
            "date",
        ),
        (
            {
                "nct_id": "NCT09000001",
                "value": "included",
                "reason": "r",
                "reviewer": "x",
                "date": "2024-01-01",
                "note": "?",
            },
            "unknown",
        ),
    ],
)
def test_bad_overrides(row: dict, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        load_overrides([row])


def test_override_unknown_criterion() -> None:
    table = load_overrides(
        [
            {
                "nct_id": "NCT09000001",
                "value": "not_a_criterion",
                "reason": "r",
                "reviewer": "x",
                "date": "2024-01-01",
            }
        ]
    )
    with pytest.raises(ConfigError, match="criterion"):
        screen_studies([irt_study()], "nsclc-irt", overrides=table)


def test_cli_screen_classify_review(tmp_path: Path, ctgov_dir: Path) -> None:
    source = str(ctgov_dir / "nsclc_150.json.gz")
    overrides = tmp_path / "o.yaml"
    overrides.write_text(
        "overrides:\n  - {nct_id: NCT03955198, variable: rt_dose, value: hypofractionated, "
        "reason: checked, reviewer: AB, date: 2024-07-01}\n",
        encoding="utf-8",
    )
    runner = CliRunner()
    out = tmp_path / "screen.csv"
    result = runner.invoke(app, ["trials", "screen", "-i", source, "-o", str(out)])
    assert result.exit_code == 0, result.output
    assert "150 trials screened" in result.output and out.is_file()
    db = tmp_path / "t.duckdb"
    result = runner.invoke(
        app,
        [
            "trials",
            "classify",
            "-i",
            source,
            "--overrides",
            str(overrides),
            "-o",
            str(tmp_path / "c.parquet"),
        ],
    )
    assert result.exit_code == 0, result.output
    result = runner.invoke(
        app, ["trials", "review", "-i", source, "--overrides", str(overrides), "--threshold", "0.9"]
    )
    assert result.exit_code == 0, result.output
    assert "reviewer override" in result.output
    assert not db.exists()


def test_cli_with_store(tmp_path: Path, ctgov_dir: Path) -> None:
    from irtscope.trials import import_paths

    db = tmp_path / "t.duckdb"
    with Store(db) as store:
        import_paths(store, [ctgov_dir / "nsclc_150.json.gz"])
    result = CliRunner().invoke(app, ["trials", "classify", "--db", str(db)])
    assert result.exit_code == 0, result.output
    assert "recorded screening run 1" in result.output
    with Store(db) as store:
        runs = store.con.execute("SELECT n_trials, n_included FROM screen_runs").fetchall()
        n_class = store.con.execute("SELECT count(*) FROM screen_classifications").fetchone()[0]
    assert runs[0][0] == 150 and runs[0][1] >= 1 and n_class > 0


def test_read_study_files(tmp_path: Path) -> None:
    from irtscope import DataError
    from irtscope.trials._cli_screen import read_study_files

    a, b = irt_study("NCT09000001"), irt_study("NCT09000002")
    (tmp_path / "list.json").write_text(json.dumps([a]), encoding="utf-8")
    (tmp_path / "page.json").write_text(json.dumps({"studies": [b]}), encoding="utf-8")
    (tmp_path / "lines.jsonl").write_text(
        json.dumps(a) + "\n" + json.dumps(b) + "\n", encoding="utf-8"
    )
    studies = read_study_files(
        [tmp_path / "list.json", tmp_path / "page.json", tmp_path / "lines.jsonl"]
    )
    assert [s["protocolSection"]["identificationModule"]["nctId"] for s in studies] == [
        "NCT09000001",
        "NCT09000002",
        "NCT09000001",
        "NCT09000002",
    ]
    (tmp_path / "bad.json").write_text("{not json", encoding="utf-8")
    with pytest.raises(DataError, match=r"bad\.json"):
        read_study_files([tmp_path / "bad.json"])


def test_radiation_type_with_a_non_radiotherapy_name() -> None:
    # NCT00573209 registers "Far Infrared Radiation" with intervention type RADIATION
    protocol = load_protocol("nsclc-irt")
    only_rt = protocol.model_copy(
        update={"criteria": tuple(c for c in protocol.criteria if c.id == "no_radiotherapy")}
    )
    infrared = irt_study(
        identificationModule__briefTitle="Far infrared therapy in NSCLC",
        identificationModule__officialTitle="",
        armsInterventionsModule__interventions=[
            {"type": "RADIATION", "name": "Far Infrared Radiation"}
        ],
    )
    real = irt_study(
        "NCT09000002",
        identificationModule__briefTitle="Durvalumab in NSCLC",
        identificationModule__officialTitle="",
        armsInterventionsModule__interventions=[{"type": "RADIATION", "name": "3D-CRT/IMRT"}],
    )
    frame = screen_studies([infrared, real], only_rt)
    assert _decision(frame, "NCT09000001") == ("excluded", "no_radiotherapy")
    assert _decision(frame, "NCT09000002") == ("included", "")


# Issue 12 failure classes, on real record text (quoted from ../shared/data/ctgov).
def test_reirradiation_in_title_is_radiotherapy() -> None:
    # NCT03087760: the only radiotherapy named is the re-irradiation of the title
    study = irt_study(
        identificationModule__briefTitle="Trial of Consolidation Pembrolizumab After Concurrent "
        "Chemotherapy and Proton Reirradiation for Thoracic Recurrences of Non-Small Cell Lung "
        "Cancer",
        identificationModule__officialTitle="",
        descriptionModule={
            "briefSummary": "people with non-small cell lung cancer (NSCLC) that has come back "
            "after radiation therapy."
        },
        armsInterventionsModule__interventions=[
            {"type": "DRUG", "name": "Pembrolizumab", "description": "Concurrent Pembrolizumab"}
        ],
    )
    frame = screen_studies([study], "nsclc-irt")
    assert frame.iloc[0]["decision"] == "included"
    assert "Reirradiation" in frame.iloc[0]["evidence"]


def test_tracer_typed_radiation_is_not_radiotherapy() -> None:
    # NCT01666353: the only intervention typed Radiation is an FDG PET tracer
    name = "PET/CT imaging with [18F] 2-deoxy-2-(18F)fluoro-D-glucose (FDG)"
    study = irt_study(
        identificationModule__briefTitle="FDG-PET Response Imaging During Checkpoint Blockade",
        identificationModule__officialTitle="",
        armsInterventionsModule__interventions=[
            {
                "type": "RADIATION",
                "name": name,
                "description": f"{name} is a potent diagnostic tool and is able to detect "
                "melanomas and other tumors, some of which are undetectable by CT.",
            },
            {"type": "DRUG", "name": "Nivolumab"},
        ],
        armsInterventionsModule__armGroups=[
            {"label": "Imaging", "interventionNames": [f"Radiation: {name}", "Drug: Nivolumab"]}
        ],
    )
    frame = screen_studies([study], "nsclc-irt")
    assert frame.iloc[0]["reason"] == "no_radiotherapy"


def test_pacific_sequence_in_inclusion_criteria_counts_with_evidence() -> None:
    # NCT03703297 inclusion criterion 2: chemoradiotherapy completed before randomisation
    study = irt_study(
        identificationModule__briefTitle="Durvalumab in Stage III NSCLC",
        identificationModule__officialTitle="",
        armsInterventionsModule__interventions=[{"type": "DRUG", "name": "Durvalumab"}],
        eligibilityModule={
            "eligibilityCriteria": "Inclusion criteria:\n\n2. Received 4 cycles of chemotherapy "
            "concurrent with radiotherapy, which must be completed within 1 to 42 days prior to "
            "randomization and the first dose of IP."
        },
    )
    frame = screen_studies([study], "nsclc-irt")
    assert frame.iloc[0]["decision"] == "included"
    assert "sequence before enrolment" in frame.iloc[0]["evidence"]


@pytest.mark.parametrize(
    ("name", "other"),
    [
        ("ADV/HSV-tk", "Replication-defective recombinant adenovirus vector"),  # NCT03004183
        ("GM-CSF", ""),  # NCT04106180
        ("Varlilumab 3 mg/kg", "CDX-1127"),  # NCT04081688
    ],
)
def test_gene_therapy_cytokine_and_agonists_are_other_immunotherapy(name: str, other: str) -> None:
    ivs = [
        {"type": "BIOLOGICAL", "name": name, "description": other},
        {"type": "DRUG", "name": "Pembrolizumab"},
        {"type": "RADIATION", "name": "SBRT"},
    ]
    frame = screen_studies([irt_study(armsInterventionsModule__interventions=ivs)], "nsclc-irt")
    assert frame.iloc[0]["reason"] == "other_immunotherapy"


def test_unknown_development_code_lowers_confidence() -> None:
    # NCT03589339: an investigational agent known to no dictionary, named by its code
    ivs = [
        {"type": "DRUG", "name": "NBTXR3", "description": "Single intra Tumoral injection"},
        {"type": "DRUG", "name": "Pembrolizumab"},
        {"type": "RADIATION", "name": "SABR"},
    ]
    frame = screen_studies([irt_study(armsInterventionsModule__interventions=ivs)], "nsclc-irt")
    row = frame.iloc[0]
    assert row["decision"] == "included"
    assert row["confidence"] <= 0.5 and row["weakest_rule"] == "other_immunotherapy"
    assert "unknown development code 'NBTXR3'" in row["evidence"]
