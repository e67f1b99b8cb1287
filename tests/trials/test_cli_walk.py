"""A user's walk through the trials CLI with bad inputs: clear one-line errors, exit code 1,
and nothing already stored is lost."""

from __future__ import annotations

import gzip
import json
import re
from pathlib import Path

import pytest
from test_screen import irt_study
from typer.testing import CliRunner

from irtscope import DataError
from irtscope.cli import app
from irtscope.trials import Store, import_paths
from irtscope.trials._sources_files import iter_file

runner = CliRunner()


def _bad_files(tmp_path: Path) -> dict[str, Path]:
    """A truncated .json.gz, binary garbage, a CSV with a wrong header and a classic CSV."""
    raw = gzip.compress(json.dumps([irt_study(f"NCT0900000{i}") for i in range(5)]).encode())
    files = {
        "truncated": tmp_path / "truncated.json.gz",
        "garbage": tmp_path / "garbage.json",
        "wrong_csv": tmp_path / "wrong.csv",
        "rank_csv": tmp_path / "rank.csv",
    }
    files["truncated"].write_bytes(raw[: len(raw) // 2])
    files["garbage"].write_bytes(bytes(range(200, 256)) * 4)
    files["wrong_csv"].write_text("not,a,registry\n1,2,3\n", encoding="utf-8")
    # NCT Number not first (the classic site's export began with "Rank")
    files["rank_csv"].write_text("Rank,NCT Number,Title\n1,NCT01234567,x\n", encoding="utf-8")
    return files


EXPECTED = {
    "truncated": "truncated or corrupt",
    "garbage": "not API v2 JSON",
    "wrong_csv": "not a registry CSV: missing columns ['NCT Number', 'Study Title']",
    "rank_csv": "not a registry CSV: missing columns ['Study Title']",
}


def test_bad_files_are_named_with_a_clear_reason(tmp_path: Path) -> None:
    for key, path in _bad_files(tmp_path).items():
        records = list(iter_file(path))
        assert len(records) == 1 and records[0].study is None, key
        assert EXPECTED[key] in records[0].error, (key, records[0].error)


def test_import_bad_files_keeps_stored_data(tmp_path: Path) -> None:
    db = tmp_path / "t.duckdb"
    good = tmp_path / "good.json"
    good.write_text(json.dumps([irt_study("NCT09000001"), irt_study("NCT09000002")]), "utf-8")
    with Store(db) as store:
        import_paths(store, [good])
        before = store.table_counts()
    files = _bad_files(tmp_path)
    args = [str(p) for p in files.values()] + [str(tmp_path / "missing.json")]
    result = runner.invoke(app, ["trials", "import", *args, "--db", str(db)])
    assert result.exit_code == 1
    lines = result.output.splitlines()
    for key, path in files.items():
        # one line per failure, naming the file and its position; "[file]" is not eaten as
        # Rich markup and the line is not wrapped
        line = next(line for line in lines if f"{path} [" in line)
        assert f"{path} [" in line and EXPECTED[key] in line, line
    assert any("missing.json: no such file" in line for line in lines)
    with Store(db) as store:
        assert store.table_counts() == before
        assert store.study_count() == 2


@pytest.mark.parametrize("key", sorted(EXPECTED))
def test_screen_input_bad_file_is_one_error(tmp_path: Path, key: str) -> None:
    path = _bad_files(tmp_path)[key]
    result = runner.invoke(app, ["trials", "screen", "-i", str(path)])
    assert result.exit_code == 1
    # a DataError (main() prints it as one line), never a traceback or click's "Aborted"
    assert isinstance(result.exception, DataError), repr(result.exception)
    assert str(path) in str(result.exception) and EXPECTED[key] in str(result.exception)


def test_screen_input_reads_registry_csv_and_jsonl_gz(tmp_path: Path) -> None:
    from irtscope.trials import studies_to_registry_csv

    csv_path = tmp_path / "export.csv"
    studies_to_registry_csv([irt_study("NCT09000001")], csv_path)
    lines = tmp_path / "s.jsonl.gz"
    lines.write_bytes(gzip.compress((json.dumps(irt_study("NCT09000002")) + "\n").encode()))
    result = runner.invoke(app, ["trials", "screen", "-i", str(csv_path), "-i", str(lines)])
    assert result.exit_code == 0, result.output
    assert "2 trials screened" in result.output


@pytest.mark.parametrize("command", ["screen", "classify", "review", "stats", "report"])
def test_missing_db_is_an_error_not_an_empty_db(tmp_path: Path, command: str) -> None:
    db = tmp_path / "typo.duckdb"
    args = ["trials", command, "--db", str(db)]
    if command == "report":
        args += ["--out", str(tmp_path / "out")]
    result = runner.invoke(app, args)
    assert result.exit_code == 1
    assert isinstance(result.exception, DataError)
    assert f"no trials database at {db}" in str(result.exception)
    assert not db.exists()


def test_review_prints_evidence_literally_and_flags_unknown_override_ids(tmp_path: Path) -> None:
    source = tmp_path / "s.json"
    # a weak call whose evidence contains brackets, which Rich would take for markup
    weak = irt_study("NCT09000001")
    weak["protocolSection"]["armsInterventionsModule"]["interventions"] = [
        {"type": "DRUG", "name": "Durvalumab [/b] [bold]x", "description": "durvalumab"}
    ]
    source.write_text(json.dumps([weak]), encoding="utf-8")
    overrides = tmp_path / "o.csv"
    overrides.write_text(
        "nct_id,variable,value,reason,reviewer,date\n"
        "NCT09000001,decision,no_radiotherapy,[red]checked[/red] arms,AB,2024-07-01\n"
        "NCT09999999,decision,included,typo,AB,2024-07-01\n",
        encoding="utf-8",
    )
    result = runner.invoke(
        app, ["trials", "review", "-i", str(source), "--overrides", str(overrides)]
    )
    assert result.exit_code == 0, result.output
    assert "1 override(s) name trials not in the data, ignored: NCT09999999" in result.output
    assert "1 reviewer override(s) applied" in result.output
    assert "[red]checked[/red] arms" in result.output
    result = runner.invoke(
        app, ["trials", "review", "-i", str(source), "--threshold", "1.01", "--limit", "500"]
    )
    assert result.exit_code == 0, result.output
    rows = [line for line in result.output.splitlines() if line.startswith("  NCT09000001")]
    # the rule id in brackets ("[aim_quality_of_life] title: ...") survives printing
    assert any(re.search(r" decision .* \[[a-z_]+\] \S", line) for line in rows), rows


def test_override_file_with_wrong_header_names_the_columns(tmp_path: Path) -> None:
    bad = tmp_path / "o.csv"
    bad.write_text("nct,var,value\nNCT09000001,decision,included\n", encoding="utf-8")
    source = tmp_path / "s.json"
    source.write_text(json.dumps([irt_study()]), encoding="utf-8")
    result = runner.invoke(app, ["trials", "screen", "-i", str(source), "--overrides", str(bad)])
    assert result.exit_code == 1
    message = str(result.exception)
    assert str(bad) in message and "unknown key(s) ['nct', 'var']" in message
    assert "nct_id, variable, value, reason, reviewer, date" in message


def test_protocol_with_unknown_key_is_one_error(tmp_path: Path) -> None:
    from irtscope import ConfigError

    bad = tmp_path / "p.yaml"
    bad.write_text(
        "name: x\nsearch_date: 2024-01-01\nwindow_begin: 2014-01-01\n"
        "criteria: [{id: d, rule: duplicate_record, label: D}]\n",
        encoding="utf-8",
    )
    source = tmp_path / "s.json"
    source.write_text(json.dumps([irt_study()]), encoding="utf-8")
    result = runner.invoke(app, ["trials", "screen", "-i", str(source), "-p", str(bad)])
    assert result.exit_code == 1
    assert isinstance(result.exception, ConfigError)
    assert str(bad) in str(result.exception)
    assert "unknown key 'window_begin'" in str(result.exception)


def test_report_source_names_a_bad_file_with_its_position(tmp_path: Path) -> None:
    good = tmp_path / "good.json"
    good.write_text(json.dumps([irt_study("NCT09000001")]), encoding="utf-8")
    bad = _bad_files(tmp_path)["wrong_csv"]
    out = tmp_path / "out"
    args = ["trials", "report", "--source", str(good), "--source", str(bad), "--out", str(out)]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    assert f"import: {bad} [header]: not a registry CSV" in result.output
    assert (out / "report.html").is_file()
