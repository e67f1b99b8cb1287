"""Offline demo: with the registry unreachable, the landscape comes from archived records.

The archive is a temporary folder of links to the shared records (nothing is copied), found
through ``$IRTSCOPE_ARCHIVE``; port 9 on localhost refuses connections, a real "registry not
reachable".
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from markupsafe import escape
from typer.testing import CliRunner

from irtscope.cli import app
from irtscope.trials._archive import ARCHIVE_BANNER, archive_sources, find_archive

UNREACHABLE = "http://127.0.0.1:9"
#: A source file name that is markup: the banner lists file names, so it must stay text.
EVIL_NAME = '<img src=x onerror="window.__pwned=1">.json.gz'


def make_archive(ctgov_dir: Path, root: Path) -> Path:
    """A small archive: nsclc_150 (2025-12) and the 2020 legacy XML of 20 of its trials."""
    earlier = ctgov_dir / "allpublicxml_2020" / "nsclc150_earlier"
    if not earlier.is_dir():
        pytest.skip(f"legacy XML records not found at {earlier}")
    root.mkdir()
    (root / EVIL_NAME).symlink_to(ctgov_dir / "nsclc_150.json.gz")
    folder = root / "allpublicxml_2020" / "nsclc150_earlier"
    folder.mkdir(parents=True)
    for path in earlier.glob("*.xml"):  # file links: folder walks do not follow folder links
        (folder / path.name).symlink_to(path)
    (root / "README.txt").write_text("not a record file")
    return root


def run_offline_demo(ctgov_dir: Path, tmp: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    archive = make_archive(ctgov_dir, tmp / "archive")
    monkeypatch.setenv("IRTSCOPE_ARCHIVE", str(archive))
    out = tmp / "demo"
    result = CliRunner().invoke(
        app, ["--quiet", "trials", "demo", "--out", str(out), "--api-url", UNREACHABLE]
    )
    assert result.exit_code == 0, result.output
    return out


def test_archive_lookup(ctgov_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    archive = make_archive(ctgov_dir, tmp_path / "a")
    monkeypatch.setenv("IRTSCOPE_ARCHIVE", str(archive))
    assert find_archive() == archive.resolve()
    # legacy XML folders first (older records), then record files; README.txt is no record
    assert [p.name for p in archive_sources(archive)] == ["allpublicxml_2020", EVIL_NAME]
    monkeypatch.setenv("IRTSCOPE_ARCHIVE", "")  # explicitly none
    assert find_archive() is None
    monkeypatch.delenv("IRTSCOPE_ARCHIVE")
    # the project layout: ../shared/data/ctgov beside the working directory
    work = tmp_path / "w" / "main"
    work.mkdir(parents=True)
    (tmp_path / "w" / "shared" / "data").mkdir(parents=True)
    (tmp_path / "w" / "shared" / "data" / "ctgov").symlink_to(archive)
    assert find_archive(cwd=work) == archive.resolve()


def test_offline_demo_builds_the_landscape_from_the_archive(
    ctgov_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    out = run_offline_demo(ctgov_dir, tmp_path, monkeypatch)
    page = (out / "report.html").read_text(encoding="utf-8")
    provenance = json.loads((out / "provenance.json").read_text(encoding="utf-8"))
    banner = provenance["banner"]
    assert banner.startswith(ARCHIVE_BANNER)
    # each source with its data date: the XML dump's download date, the export's newest
    assert "allpublicxml_2020 (data of 2020-07-28)" in banner
    assert f"{EVIL_NAME} (data of 2026-03-13)" in banner
    # the banner is on the page as text, escaped like every registry-derived string
    assert f'<p class="banner" role="note"><strong>{escape(banner)}</strong></p>' in page
    assert "<img src=x" not in page
    # 170 records read, 150 unique studies: the 20 trials in both files count once
    assert provenance["entries_read"] == 170
    assert provenance["unique_studies"] <= 150


def test_live_report_has_no_archive_banner(tmp_path: Path) -> None:
    """Only the archive fallback sets the banner (reports from --source carry none)."""
    import pandas as pd

    from irtscope.trials._protocol import load_protocol
    from irtscope.trials._report import write_landscape_report

    screening = pd.DataFrame(
        {"nct_id": ["NCT00000001"], "decision": ["excluded"], "step": [4], "reason": ["not_nsclc"]}
    )
    screening["reason_label"] = "Not NSCLC"
    screening["evidence"] = "[]"
    screening["overridden"] = False
    study = {"protocolSection": {"identificationModule": {"nctId": "NCT00000001"}}}
    result = write_landscape_report(
        screening,
        pd.DataFrame(columns=["nct_id", "variable", "value"]),
        [study],
        tmp_path,
        protocol=load_protocol("nsclc-irt"),
    )
    assert 'class="banner"' not in result.html.read_text(encoding="utf-8")
