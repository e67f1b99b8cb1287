"""Bulk importers: the shared files, every accepted layout, bad input, the CLI."""

from __future__ import annotations

import gzip
import zipfile
from pathlib import Path

import orjson
import pytest
from typer.testing import CliRunner

from irtscope.cli import app
from irtscope.trials import Store, import_paths
from irtscope.trials._sources_files import iter_file

SHARED_FILES = [
    "aact_fixtures_13.json.gz",
    "nsclc_150.json.gz",
    "tigit_1178.json.gz",
    "urology_635.json.gz",
]


@pytest.fixture(scope="module")
def small_records(ctgov_dir: Path) -> list[dict]:
    """163 real records (nsclc_150 + aact_fixtures_13, which has one NCT id twice)."""
    records = _load(ctgov_dir / "nsclc_150.json.gz")
    return records + _load(ctgov_dir / "aact_fixtures_13.json.gz")


def _load(path: Path) -> list[dict]:
    with gzip.open(path) as handle:
        return orjson.loads(handle.read())


def _keys(store: Store) -> set[tuple[str, str]]:
    return set(store.con.execute("SELECT nct_id, version FROM study_versions").fetchall())


def test_shared_files_acceptance_counts(ctgov_dir: Path, tmp_path: Path) -> None:
    paths = [ctgov_dir / name for name in SHARED_FILES]
    with Store(tmp_path / "t.duckdb") as store:
        report = import_paths(store, paths)
        assert report.failures == []
        assert report.entries_read == 1976
        assert report.new_studies == 1925
        assert report.duplicates == 51
        # 50 exact copies across files + one second version of NCT02552212 (older export)
        assert report.identical == 50 and report.older_versions == 1
        assert store.study_count() == 1925
        summary = store.hit_summary()
        assert (summary["entries_read"], summary["unique_studies"]) == (1976, 1925)
        current = store.get_study("NCT02552212")
        assert current["derivedSection"]["miscInfoModule"]["versionHolder"] == "2024-01-03"
        history = store.con.execute(
            "SELECT version_holder FROM study_versions WHERE nct_id = 'NCT02552212' "
            "AND NOT is_current"
        ).fetchall()
        assert history == [("2023-12-12",)]
        assert sum(1 for _ in store.iter_studies()) == 1925
        counts = store.table_counts()
        assert report.table_counts == counts
        again = import_paths(store, paths)
        assert again.new_studies == 0 and again.new_versions == 0 and again.older_versions == 0
        assert store.table_counts() == counts
        assert store.snapshot_info()["data_timestamp"] is not None


def _write_layouts(records: list[dict], folder: Path) -> dict[str, Path]:
    out = {}
    out["list"] = folder / "list.json"
    out["list"].write_bytes(orjson.dumps(records))
    out["list_gz"] = folder / "list.json.gz"
    out["list_gz"].write_bytes(gzip.compress(orjson.dumps(records)))
    out["page"] = folder / "page.json"
    out["page"].write_bytes(
        orjson.dumps({"studies": records, "nextPageToken": "x"}, option=orjson.OPT_INDENT_2)
    )
    pages = [records[i : i + 40] for i in range(0, len(records), 40)]
    out["pages_jsonl"] = folder / "pages.jsonl"
    out["pages_jsonl"].write_bytes(b"\n".join(orjson.dumps({"studies": p}) for p in pages))
    out["jsonl_gz"] = folder / "studies.jsonl.gz"
    out["jsonl_gz"].write_bytes(gzip.compress(b"\n".join(orjson.dumps(r) for r in records)))
    out["zip"] = folder / "ctg-studies.json.zip"
    with zipfile.ZipFile(out["zip"], "w", zipfile.ZIP_DEFLATED) as archive:
        for i, record in enumerate(records):
            nct = record["protocolSection"]["identificationModule"]["nctId"]
            archive.writestr(f"{nct}_{i}.json", orjson.dumps(record, option=orjson.OPT_INDENT_2))
    return out


def test_every_layout_gives_the_same_store(small_records: list[dict], tmp_path: Path) -> None:
    layouts = _write_layouts(small_records, tmp_path)
    results = {}
    for name, path in layouts.items():
        with Store(":memory:") as store:
            report = import_paths(store, [path])
            assert report.failures == [], name
            assert (report.entries_read, report.new_studies) == (163, 162), name
            results[name] = _keys(store)
    reference = results.pop("list")
    for name, keys in results.items():
        assert keys == reference, name


def test_zip_members_in_several_batches_keep_every_entry(
    small_records: list[dict], tmp_path: Path
) -> None:
    """Members all have position "line 1"; entries must still be one per member."""
    layouts = _write_layouts(small_records[:10], tmp_path)
    with Store(":memory:") as store:
        report = import_paths(store, [layouts["zip"]], batch_size=3)
        assert report.entries_read == 10
        assert store.hit_summary()["entries_read"] == 10
        again = import_paths(store, [layouts["zip"]], batch_size=3)
        assert again.new_studies == 0 and store.hit_summary()["entries_read"] == 10


def test_streamed_layouts_yield_positions(small_records: list[dict], tmp_path: Path) -> None:
    layouts = _write_layouts(small_records[:3], tmp_path)
    assert [r.position for r in iter_file(layouts["jsonl_gz"])] == ["line 1", "line 2", "line 3"]
    assert [r.position for r in iter_file(layouts["list"])] == ["item 0", "item 1", "item 2"]
    members = [r.path for r in iter_file(layouts["zip"])]
    assert all("!" in m for m in members) and len(members) == 3


def test_bad_input_is_reported_and_skipped(small_records: list[dict], tmp_path: Path) -> None:
    good = [orjson.dumps(r) for r in small_records[:5]]
    lines = [
        good[0],
        b'{"protocolSection": {"identificationModule": {"nctId": "NCT0',
        good[1],
        b"[1, 2]",
        b'{"protocolSection": {"statusModule": {}}}',
        b'"text"',
        *good[2:],
    ]
    bad_jsonl = tmp_path / "bad.jsonl"
    bad_jsonl.write_bytes(b"\n".join(lines))
    broken_gz = tmp_path / "broken.json.gz"
    broken_gz.write_bytes(gzip.compress(orjson.dumps(small_records[5:10]))[:300])
    not_json = tmp_path / "notes.json"
    not_json.write_text("[this is not json", encoding="utf-8")
    with Store(":memory:") as store:
        report = import_paths(store, [bad_jsonl, broken_gz, not_json, tmp_path / "missing.json"])
        assert report.new_studies == 5
        where = {(Path(f.path).name, f.position): f.reason for f in report.failures}
        assert where[("bad.jsonl", "line 2")].startswith("invalid JSON")
        assert where[("bad.jsonl", "line 4 item 0")] == "not a JSON object (int)"
        assert where[("bad.jsonl", "line 5")] == "no NCT id"
        assert where[("bad.jsonl", "line 6")] == "expected a JSON object or list, got str"
        assert any(k[0] == "broken.json.gz" for k in where)
        assert where[("notes.json", "file")].startswith("invalid JSON")
        assert where[("missing.json", None)] == "no such file"
        assert not report.ok
        # the broken files left no snapshot behind
        sources = {r[0] for r in store.con.execute("SELECT source FROM snapshots").fetchall()}
        assert sources == {str(bad_jsonl)}


def test_cli_import_and_stats(small_records: list[dict], tmp_path: Path) -> None:
    data = tmp_path / "s.jsonl"
    data.write_bytes(b"\n".join(orjson.dumps(r) for r in small_records[:20]))
    db = tmp_path / "cli.duckdb"
    runner = CliRunner()
    result = runner.invoke(app, ["--quiet", "trials", "import", "--db", str(db), str(data)])
    assert result.exit_code == 0, result.output
    result = runner.invoke(app, ["trials", "import", "--db", str(db), str(data)])
    assert result.exit_code == 0
    assert "read 20 entries" in result.output and "0 new studies" in result.output
    assert "rows per table" in result.output
    result = runner.invoke(app, ["trials", "stats", "--db", str(db)])
    assert result.exit_code == 0 and "20 unique studies" in result.output
    bad = tmp_path / "bad.jsonl"
    bad.write_bytes(b"{not json}\n")
    result = runner.invoke(app, ["trials", "import", "--db", str(db), str(bad)])
    assert result.exit_code == 1


def test_folder_import(small_records: list[dict], tmp_path: Path) -> None:
    folder = tmp_path / "unpacked"
    (folder / "sub").mkdir(parents=True)
    for record in small_records[:4]:
        nct = record["protocolSection"]["identificationModule"]["nctId"]
        (folder / "sub" / f"{nct}.json").write_bytes(orjson.dumps(record))
    with Store(":memory:") as store:
        report = import_paths(store, [folder])
        assert (report.files, report.new_studies, report.ok) == (4, 4, True)


def _study_tables(counts: dict[str, int]) -> dict[str, int]:
    """Row counts of the tables that hold studies (not the hit log or snapshots)."""
    return {name: n for name, n in counts.items() if name not in ("entries", "snapshots")}


def test_reimport_in_other_bytes_adds_no_version_at_the_memory_cap(
    ctgov_dir: Path, tmp_path: Path
) -> None:
    """Issue 13, defect 1: every shared record again, re-serialised (other bytes, same
    content), into a file store at DuckDB's import memory cap. Each known study's stored
    versions are compared as JSON values; that used to fetch the whole batch's candidates
    sorted in one query (OutOfMemoryException at 128 MB, then a TransactionException)."""
    paths = [ctgov_dir / name for name in SHARED_FILES]
    records = [record for path in paths for record in _load(path)]
    compact = tmp_path / "again.jsonl"
    compact.write_bytes(b"\n".join(orjson.dumps(record) for record in records))
    repeated = tmp_path / "nsclc_x10.jsonl"
    repeated.write_bytes(b"\n".join(orjson.dumps(r) for r in _load(paths[1]) * 10))
    with Store(tmp_path / "t.duckdb") as store:
        import_paths(store, paths)
        before = store.table_counts()
        report = import_paths(store, [compact, repeated])
        assert report.failures == []
        assert report.entries_read == len(records) + 1500
        assert report.new_studies == report.new_versions == report.older_versions == 0
        assert report.identical == report.entries_read
        assert _study_tables(store.table_counts()) == _study_tables(before)
        assert store.study_count() == 1925


def _deep(levels: int, nct: str = "NCT09999999") -> bytes:
    """A study-shaped record with one field nested ``levels`` deep (built here)."""
    return (
        b'{"protocolSection": {"identificationModule": {"nctId": "' + nct.encode() + b'"}}, '
        b'"extra": ' + b"[" * levels + b"]" * levels + b"}"
    )


def test_deeply_nested_record_is_named_and_skipped(
    small_records: list[dict], tmp_path: Path
) -> None:
    """Issue 13, defect 2: one record nested 5,000 levels used to raise RecursionError and
    abort the command; it is now one failure, and the rest (of that file and later files) is
    imported, whether the file is JSONL, a JSON list or a page."""
    good = [orjson.dumps(r) for r in small_records[:6]]
    deep_object = b'{"protocolSection": ' + b'{"a": ' * 3000 + b"1" + b"}" * 3001
    jsonl = tmp_path / "deep.jsonl"
    jsonl.write_bytes(b"\n".join([good[0], _deep(5000), good[1], deep_object]))
    listed = tmp_path / "deep.json"
    listed.write_bytes(b"[" + b",".join([good[2], _deep(1500), good[3]]) + b"]")
    page = tmp_path / "page.json"
    page.write_bytes(b'{"studies": [' + b",".join([_deep(2000), good[4]]) + b'], "x": 1}')
    later = tmp_path / "later.jsonl"
    later.write_bytes(good[5])
    with Store(":memory:") as store:
        report = import_paths(store, [jsonl, listed, page, later])
        where = {(Path(f.path).name, f.position): f.reason for f in report.failures}
        assert set(where) == {
            ("deep.jsonl", "line 2"),
            ("deep.jsonl", "line 4"),
            ("deep.json", "item 1"),
            ("page.json", "line 1 studies[0]"),
        }
        assert all("nested too deeply" in reason for reason in where.values()), where
        assert report.new_studies == 6 and report.files == 4
    result = CliRunner().invoke(
        app, ["trials", "import", "--db", str(tmp_path / "c.duckdb"), str(jsonl), str(later)]
    )
    assert result.exit_code == 1
    assert "Traceback" not in result.output and "RecursionError" not in result.output
    assert "line 2" in result.output and "nested too deeply" in result.output


def test_import_of_an_empty_folder_says_so(tmp_path: Path) -> None:
    """Issue 13: an empty folder used to be "read 0 entries from 0 file(s)", exit 0."""
    empty = tmp_path / "empty"
    (empty / "sub").mkdir(parents=True)
    with Store(":memory:") as store:
        report = import_paths(store, [empty])
    assert [(f.path, f.reason) for f in report.failures] == [
        (str(empty), "folder holds no files to import")
    ]
    result = CliRunner().invoke(
        app, ["trials", "import", "--db", str(tmp_path / "e.duckdb"), str(empty)]
    )
    assert result.exit_code == 1 and "no files to import" in result.output


def test_jsonl_with_damaged_first_lines_keeps_the_rest(
    small_records: list[dict], tmp_path: Path
) -> None:
    """A damaged first line made the reader take a JSONL file for one indented document
    (every record lost as "invalid JSON"); JSONL is recognised by any of its first lines."""
    good = [orjson.dumps(r) for r in small_records[:3]]
    path = tmp_path / "damaged_head.jsonl"
    path.write_bytes(b"\n".join([good[0][:40], b"", good[1][5:], *good]))
    with Store(":memory:") as store:
        report = import_paths(store, [path])
    assert report.new_studies == 3
    assert [f.position for f in report.failures] == ["line 1", "line 3"]
    pretty = tmp_path / "pretty.json"
    pretty.write_bytes(orjson.dumps(small_records[0], option=orjson.OPT_INDENT_2))
    with Store(":memory:") as store:
        assert import_paths(store, [pretty]).new_studies == 1
