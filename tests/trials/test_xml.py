"""Legacy ``<clinical_study>`` XML import: mapping onto API v2, layouts, bad input, versions."""

from __future__ import annotations

import zipfile
from pathlib import Path

import pytest
from typer.testing import CliRunner

from irtscope.cli import app
from irtscope.trials import Store, import_paths


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
        assert store.snapshot_info()["data_timestamp"] == "2020-07-28"
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
