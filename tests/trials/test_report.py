"""The landscape report: files written, HTML self-contained and escaped, numbers traceable."""

from __future__ import annotations

import gzip
import json
import re
from pathlib import Path

import pandas as pd
import pytest

from irtscope.trials._protocol import load_protocol
from irtscope.trials._report import (
    REPORT_SECTIONS,
    explain_rows,
    iter_explain_lines,
    write_landscape_report,
)

EVIL = "<script>window.__pwned=1</script><b>x</b>"


def _study(nct: str, title: str) -> dict:
    return {
        "protocolSection": {"identificationModule": {"nctId": nct, "briefTitle": title}},
        "derivedSection": {"miscInfoModule": {"versionHolder": "2025-12-01"}},
    }


def _contract_frames() -> tuple[pd.DataFrame, pd.DataFrame, list[dict]]:
    studies = [_study(f"NCT0000000{i}", f"Trial {i}") for i in range(1, 6)]
    studies[0] = _study("NCT00000001", EVIL)
    screening = pd.DataFrame(
        {
            "nct_id": [s["protocolSection"]["identificationModule"]["nctId"] for s in studies],
            "decision": ["included", "included", "included", "excluded", "excluded"],
            "step": [0, 0, 0, 2, 6],
            "reason": ["", "", "", "outside_window", "no_radiotherapy"],
            "reason_label": ["", "", "", "Registered outside", "No radiotherapy"],
            "evidence": ["[]"] * 5,
            "overridden": [False] * 5,
            "registration_date": ["2016-01-01", "2019-02-03", "2022-05-06", "2010-01-01", "2023"],
            "registration_year": [2016, 2019, 2022, 2010, 2023],
        }
    )
    rows = []
    for nct, period, stage, tech, drug in [
        ("NCT00000001", "2014-2017", "III", "stereotactic RT", "durvalumab"),
        ("NCT00000002", "2018-2020", "IV", "stereotactic RT", "pembrolizumab"),
        ("NCT00000003", "2021-2024", "IV", "", "durvalumab"),
    ]:
        rows += [
            (nct, "period", period),
            (nct, "stage", stage),
            (nct, "region", "Europe"),
            (nct, "enrollment", "40"),
            (nct, "ici_drug", drug),
            (nct, "innovation_major_count", "1" if tech else "0"),
        ]
        if tech:
            rows.append((nct, "rt_technology", tech))
    classification = pd.DataFrame(rows, columns=["nct_id", "variable", "value"])
    classification["field"] = "x"
    classification["evidence"] = ""
    classification["confidence"] = 1.0
    return screening, classification, studies


@pytest.fixture(scope="module")
def report(tmp_path_factory: pytest.TempPathFactory):
    screening, classification, studies = _contract_frames()
    out = tmp_path_factory.mktemp("report")
    return write_landscape_report(
        screening,
        classification,
        studies,
        out,
        protocol=load_protocol("nsclc-irt"),
        entries_read=8,
        snapshot={"source": "test", "retrieved_at": "2025-12-02T00:00:00"},
    )


def test_files_written(report) -> None:
    for files in report.tables.values():
        assert files.csv.is_file() and files.xlsx.is_file() and files.markdown.is_file()
    for name in (
        "table1_general",
        "table2_design",
        "ici",
        "innovation",
        "explain",
        "published_vs_snapshot",
        "flow",
        "screening",
    ):
        assert name in report.tables
    for files in report.figures.values():
        assert files.png.stat().st_size > 1000 and files.svg.is_file()
    assert {"flow_diagram", "trends_major", "trends_subcategories", "regions"} <= set(
        report.figures
    )
    assert (report.out_dir / "provenance.json").is_file()


def test_html_self_contained_and_escaped(report) -> None:
    html = report.html.read_text(encoding="utf-8")
    for section in REPORT_SECTIONS:
        assert f'id="{section}"' in html
    # no external resources: every src/href is a data URI or an in-page anchor
    for ref in re.findall(r'(?:src|href)="([^"]*)"', html):
        assert ref.startswith(("data:image/png;base64,", "#")), ref
    assert "<script" not in html
    assert "&lt;script&gt;window.__pwned=1&lt;/script&gt;&lt;b&gt;x&lt;/b&gt;" in html
    assert report.snapshot["data_timestamp"] == "2025-12-01"
    assert "data timestamp: 2025-12-01" in html


def test_flow_and_published(report) -> None:
    flow = report.flow.set_index("key")
    assert flow.loc["hits", "n"] == 8
    assert flow.loc["unique", "n"] == 5
    assert flow.loc["included", "n"] == 3
    assert flow.loc["included", "published"] == 196
    comparison = report.comparison
    srt = comparison[(comparison["value"] == "stereotactic RT") & (comparison["Period"] == "all")]
    assert srt.iloc[0]["This snapshot n (%)"] == "2 (66.7)"
    assert srt.iloc[0]["Published n (%)"] == "83 (42.3)"
    assert srt.iloc[0]["Difference (pp)"] == "+24.3"


def test_explain(report) -> None:
    rows = explain_rows(report.explain, "stage=IV")
    overall = rows[(rows["column"] == "overall")].iloc[0]
    assert overall["nct_ids"] == "NCT00000002;NCT00000003"
    lines = list(iter_explain_lines(rows))
    assert any("NCT00000002, NCT00000003" in line for line in lines)
    csv = pd.read_csv(report.tables["explain"].csv)
    assert len(csv) == len(report.explain)
    from irtscope import DataError

    with pytest.raises(DataError, match="matches no table cell"):
        explain_rows(report.explain, "stage=V")
    # a known variable with a wrong value lists that variable's values, not every variable
    with pytest.raises(DataError, match=r"stage values: .*III, IV") as info:
        explain_rows(report.explain, "stage=V")
    assert "variables:" not in str(info.value)
    with pytest.raises(DataError, match=r"variables: .*stage"):
        explain_rows(report.explain, "no_such_variable")


# ------------------------------------------------------------------ end to end (shared data)


def _records(ctgov_dir: Path, name: str) -> list[dict]:
    with gzip.open(ctgov_dir / name, "rt", encoding="utf-8") as fh:
        return json.load(fh)


def test_end_to_end_nsclc_150(ctgov_dir: Path, tmp_path: Path) -> None:
    pytest.importorskip("irtscope.trials._screen")
    pytest.importorskip("irtscope.trials._classify")
    from irtscope.trials._report import build_landscape_report

    studies = _records(ctgov_dir, "nsclc_150.json.gz")
    calls = []
    result = build_landscape_report(
        studies, "nsclc-irt", tmp_path / "out", progress=lambda a, t, d: calls.append((a, t, d))
    )
    flow = result.flow.set_index("key")
    assert flow.loc["hits", "n"] == 150
    assert flow.loc["included", "n"] == result.n_included
    assert result.n_included == (result.screening["decision"] == "included").sum()
    assert any(d == "Screening" for _a, _t, d in calls)
    # every included trial has a period, and explain counts match Table 1
    assert set(result.data.period_of) == set(result.data.ids)
    html = result.html.read_text(encoding="utf-8")
    assert "<script" not in html


# ------------------------------------------------------------------ CLI


def test_demo_offline_one_line(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from typer.testing import CliRunner

    from irtscope.cli import app

    # neither registry nor archived records (tests/trials/test_demo_archive.py has those)
    monkeypatch.setenv("IRTSCOPE_ARCHIVE", str(tmp_path / "no-archive"))
    # Port 9 (discard) on localhost refuses connections: a real "registry not reachable".
    result = CliRunner().invoke(
        app,
        ["--quiet", "trials", "demo", "--out", str(tmp_path), "--api-url", "http://127.0.0.1:9"],
    )
    assert result.exit_code == 1
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1
    assert lines[0].startswith("ClinicalTrials.gov is not reachable")
    assert "make demo SOURCE=" in lines[0]
    assert not (tmp_path / "report.html").exists()


def test_cli_report_from_source(ctgov_dir: Path, tmp_path: Path) -> None:
    pytest.importorskip("irtscope.trials._screen")
    pytest.importorskip("irtscope.trials._classify")
    from typer.testing import CliRunner

    from irtscope.cli import app

    out = tmp_path / "rep"
    result = CliRunner().invoke(
        app,
        [
            "--quiet",
            "trials",
            "report",
            "--source",
            str(ctgov_dir / "nsclc_150.json.gz"),
            "--out",
            str(out),
            "--explain",
            "period",
        ],
    )
    assert result.exit_code == 0, result.output
    assert (out / "report.html").is_file()
    assert (out / "tables" / "table1_general.xlsx").is_file()
    assert "table1_general period=" in result.output


def test_excel_safe_cleaning() -> None:
    from irtscope.trials._report import _clean

    frame = pd.DataFrame({"a": ["bell\x07here", "x" * 40000, None], "b": [1, 2, 3]})
    cleaned = _clean(frame)
    assert cleaned.loc[0, "a"] == "bell here"
    assert len(cleaned.loc[1, "a"]) <= 32767 and cleaned.loc[1, "a"].endswith("[truncated]")
    assert frame.loc[0, "a"] == "bell\x07here"  # input unchanged


def test_overrides_flow_into_report(ctgov_dir: Path, tmp_path: Path) -> None:
    from irtscope.trials._report import build_landscape_report
    from irtscope.trials._screen import screen_studies

    studies = _records(ctgov_dir, "nsclc_150.json.gz")
    proto = load_protocol("nsclc-irt")
    screening = screen_studies(studies, proto)
    flipped = screening.loc[screening["reason"] == "no_radiotherapy", "nct_id"].iloc[0]
    overrides = tmp_path / "overrides.csv"
    pd.DataFrame(
        [
            {
                "nct_id": flipped,
                "variable": "decision",
                "value": "included",
                "reason": "test: reviewer reads SBRT in the arm description",
                "reviewer": "tester",
                "date": "2026-01-01",
            },
            {
                "nct_id": flipped,
                "variable": "stage",
                "value": "II-IV",
                "reason": "test: stage read from eligibility",
                "reviewer": "tester",
                "date": "2026-01-01",
            },
        ]
    ).to_csv(overrides, index=False)
    result = build_landscape_report(studies, proto, tmp_path / "out", overrides=overrides)
    assert flipped in result.data.ids
    n_rules = int((screening["decision"] == "included").sum())
    assert result.n_included == n_rules + 1
    cell = explain_rows(result.explain, "stage=II-IV")
    assert flipped in cell.loc[cell["column"] == "overall", "nct_ids"].iloc[0]


def test_registry_and_reviewer_text_is_escaped_and_overrides_listed(tmp_path: Path) -> None:
    """Sponsor names, evidence text and override reasons are untrusted: escaped, and shown."""
    screening, classification, studies = _contract_frames()
    studies[1]["protocolSection"]["sponsorCollaboratorsModule"] = {
        "leadSponsor": {"name": "<img src=x onerror=alert(1)> Sponsor & Co"}
    }
    screening["confidence"] = 1.0
    evidence = [
        {"rule": "no_radiotherapy", "field": "armsInterventionsModule", "text": "<b>no RT</b>"},
        {"rule": "override", "field": "reviewer R on 2026-01-01", "text": "<script>x</script>"},
    ]
    screening.loc[4, "evidence"] = json.dumps(evidence)
    screening.loc[4, "overridden"] = True
    screening.loc[3, "evidence"] = json.dumps(
        [{"rule": "outside_window", "field": "statusModule", "text": "<i>2010-01-01</i>"}]
    )
    classification["overridden"] = False
    extra = classification.iloc[[0]].copy()
    extra[["variable", "value", "field", "evidence", "overridden"]] = [
        "rt_dose", "hypofractionated", "override by R on 2026-01-01", "<u>read PDF</u>", True
    ]  # fmt: skip
    classification = pd.concat([classification, extra], ignore_index=True)
    result = write_landscape_report(
        screening, classification, studies, tmp_path, protocol=load_protocol("nsclc-irt")
    )
    html = result.html.read_text(encoding="utf-8")
    for raw in ("<img src=x", "<b>no RT", "<script>x", "<i>2010", "<u>read"):
        assert raw not in html
    assert "&lt;img src=x onerror=alert(1)&gt; Sponsor &amp; Co" in html
    assert "statusModule: &lt;i&gt;2010-01-01&lt;/i&gt;" in html
    # an overridden exclusion shows the reviewer's reason, not the overruled rule's evidence
    assert "reviewer R on 2026-01-01: &lt;script&gt;x&lt;/script&gt;" in html
    assert "(reviewer override)" in html
    section = html[html.index('id="overrides"') : html.index('id="methods"')]
    assert "Reviewer overrides (2)" in section
    assert "override by R on 2026-01-01: &lt;u&gt;read PDF&lt;/u&gt;" in section
    assert "hypofractionated" in section and "NCT00000005" in section
    summary = html[html.index('id="summary"') : html.index('id="published-vs-snapshot"')]
    summary = " ".join(summary.split())
    assert "Percentages are of the <strong>3 included trials</strong>" in summary
    assert "2 call(s) were set by reviewer overrides" in summary


def test_store_with_several_snapshots_is_not_dated_by_the_last(tmp_path: Path) -> None:
    from irtscope.trials import Store, import_paths
    from irtscope.trials._report import _load_inputs

    paths = []
    for i, stamp in enumerate(["2026-03-13", "2024-09-24"]):  # newer data imported first
        study = _study(f"NCT0000001{i}", f"Trial {i}")
        study["derivedSection"]["miscInfoModule"]["versionHolder"] = stamp
        paths.append(tmp_path / f"s{i}.json")
        paths[-1].write_text(json.dumps([study]), encoding="utf-8")
    with Store(tmp_path / "t.duckdb") as store:
        for path in paths:
            import_paths(store, [path])
        assert store.snapshot_info()["data_timestamp"] == "2024-09-24"  # the last import
        _studies, _hits, snapshot = _load_inputs(store)
    assert snapshot["data_timestamp"] == "2024-09-24 to 2026-03-13"
    assert snapshot["source"].startswith("2 sources: ")
    assert all(str(p) in snapshot["source"] for p in paths)
