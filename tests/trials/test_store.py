"""Store: schema, versions (newer supersedes, older stays), aliases, transactions."""

from __future__ import annotations

import copy
import gzip
import json
from pathlib import Path
from typing import Any

import orjson
import pytest

from irtscope._errors import DataError
from irtscope.trials import Store
from irtscope.trials._normalize import normalize_study, parse_partial_date
from irtscope.trials._sources_files import RawRecord


def _load(path: Path) -> list[dict]:
    with gzip.open(path) as handle:
        return orjson.loads(handle.read())


def _study(nct: str, updated: str = "2024-01-02", title: str = "A trial", **extra: Any) -> dict:
    """A small synthetic API v2 record (built here, not real data)."""
    study: dict[str, Any] = {
        "protocolSection": {
            "identificationModule": {"nctId": nct, "briefTitle": title},
            "statusModule": {
                "overallStatus": "RECRUITING",
                "startDateStruct": {"date": "2019-03", "type": "ACTUAL"},
                "lastUpdatePostDateStruct": {"date": updated, "type": "ACTUAL"},
            },
            "conditionsModule": {"conditions": ["NSCLC"]},
        },
        "hasResults": False,
    }
    study["protocolSection"]["identificationModule"].update(extra)
    return study


def _ingest(store: Store, studies: list[dict], source: str = "mem") -> Any:
    batch = [RawRecord(source, f"item {i}", study=s) for i, s in enumerate(studies)]
    return store.import_records(batch, source=source)


def test_empty_store_has_schema_version() -> None:
    with Store(":memory:") as store:
        assert store.study_count() == 0
        assert store.con.execute("SELECT version FROM schema_version").fetchall() == [(1,)]
        assert list(store.iter_studies()) == []
        assert store.hit_summary()["entries_read"] == 0
        assert store.snapshot_info()["source"] is None


def test_store_with_older_version_ids_recognises_its_studies(tmp_path: Path) -> None:
    """Stores written before ids hashed compact bytes (they hashed key-sorted JSON) still
    see a re-imported study as the version they hold: versions are compared as values."""
    db = tmp_path / "old.duckdb"
    study = _study("NCT00000001")
    with Store(db) as store:
        _ingest(store, [study])
        store.con.execute("UPDATE study_versions SET version = 'sha256-style-old-id'")
        store.con.execute("UPDATE studies SET version = 'sha256-style-old-id'")
    with Store(db) as store:
        report = _ingest(store, [study], source="again")
        assert (report.identical, report.new_versions) == (1, 0)
        assert store.study_count() == 1


def test_store_file_is_attached_with_small_row_groups(tmp_path: Path) -> None:
    """Row groups fill per import batch and go straight to the file (see ``_attach``)."""
    from irtscope.trials._duckdb import ROW_GROUP_SIZE

    db = tmp_path / "rg.duckdb"
    studies = [_study(f"NCT{i:08d}") for i in range(ROW_GROUP_SIZE + 10)]
    with Store(db) as store:
        _ingest(store, studies)
        groups = store.con.execute(
            "SELECT count(DISTINCT row_group_id) FROM pragma_storage_info('study_versions')"
        ).fetchone()
        assert groups is not None and groups[0] == 2
    assert not (tmp_path / ".tmp").exists() and not Path(".tmp").exists()


def test_file_store_reopens(tmp_path: Path) -> None:
    db = tmp_path / "sub" / "t.duckdb"
    with Store(db) as store:
        _ingest(store, [_study("NCT00000001")])
    with Store(db) as store:
        assert store.study_count() == 1
        assert store.con.execute("SELECT count(*) FROM schema_version").fetchall() == [(1,)]


def test_newer_version_supersedes_and_old_stays_queryable() -> None:
    v1 = _study("NCT00000001", updated="2023-05-01", title="old title")
    v2 = _study("NCT00000001", updated="2024-05-01", title="new title")
    v0 = _study("NCT00000001", updated="2022-01-01", title="oldest title")
    with Store(":memory:") as store:
        first = _ingest(store, [v1])
        assert (first.new_studies, first.new_versions) == (1, 0)
        second = _ingest(store, [v2])
        assert (second.new_studies, second.new_versions, second.duplicates) == (0, 1, 1)
        third = _ingest(store, [v0])
        assert third.older_versions == 1
        assert store.study_count() == 1
        [current] = list(store.iter_studies())
        assert current["protocolSection"]["identificationModule"]["briefTitle"] == "new title"
        titles = store.con.execute(
            "SELECT brief_title, is_current FROM studies ORDER BY brief_title"
        ).fetchall()
        assert titles == [("new title", True), ("old title", False), ("oldest title", False)]
        rows = store.con.execute("SELECT brief_title FROM current_studies").fetchall()
        assert rows == [("new title",)]
        versions = store.con.execute(
            "SELECT version FROM study_versions WHERE NOT is_current"
        ).fetchall()
        for (version,) in versions:
            assert store.get_study("NCT00000001", version) is not None


def test_same_content_twice_changes_nothing() -> None:
    with Store(":memory:") as store:
        _ingest(store, [_study("NCT00000001"), _study("NCT00000002")], source="a")
        before = store.table_counts()
        # Writing must not matter: whitespace (pretty-printed bulk zip), key order and
        # escapes (Python's ensure_ascii) give the same version, compared as JSON values.
        study = _study("NCT00000001")
        study["protocolSection"]["identificationModule"]["officialTitle"] = "Étude – phase 2"
        _ingest(store, [study], source="s")
        before = store.table_counts()
        writings = [
            json.dumps(study, indent=2).encode(),
            json.dumps(dict(reversed(list(study.items()))), ensure_ascii=False).encode(),
            json.dumps(study).replace("/", "\\/").encode(),
        ]
        for i, raw in enumerate(writings):
            report = store.import_records([RawRecord("s", f"item {i}", raw=raw)], source="s")
            assert (report.identical, report.new_versions, report.new_studies) == (1, 0, 0)
        counts = store.table_counts()
        stored = [k for k in counts if k not in ("entries", "snapshots")]  # hits are logged
        assert {k: counts[k] - before[k] for k in stored} == dict.fromkeys(stored, 0)
        # every entry points at the one stored version
        versions = store.con.execute(
            "SELECT DISTINCT version FROM entries WHERE nct_id = 'NCT00000001' AND source = 's'"
        ).fetchall()
        assert len(versions) == 1
        # a change of content is another version
        study["protocolSection"]["identificationModule"]["officialTitle"] = "Étude – phase 3"
        report = store.import_records(
            [RawRecord("s", "item 9", raw=json.dumps(study).encode())], source="s"
        )
        assert report.new_versions == 1


def test_duplicates_within_one_batch_are_counted() -> None:
    with Store(":memory:") as store:
        report = _ingest(store, [_study("NCT00000001"), _study("NCT00000001")])
        assert (report.entries_read, report.new_studies, report.identical) == (2, 1, 1)
        assert report.duplicates == 1
        assert store.hit_summary()["entries_read"] == 2


def test_alias_is_merged_and_counted() -> None:
    old = _study("NCT00000001", title="registered twice")
    new = _study("NCT00000002", title="registered twice", nctIdAliases=["NCT00000001"])
    with Store(":memory:") as store:
        report = _ingest(store, [old, new])
        assert report.alias_merged == 1
        assert store.study_count() == 1
        [current] = list(store.iter_studies())
        assert current["protocolSection"]["identificationModule"]["nctId"] == "NCT00000002"
        merged = store.con.execute(
            "SELECT nct_id, merged_into FROM study_versions WHERE merged_into IS NOT NULL"
        ).fetchall()
        assert merged == [("NCT00000001", "NCT00000002")]
        # a later copy of the alias stays merged
        _ingest(store, [_study("NCT00000001", updated="2025-01-01")])
        assert store.study_count() == 1


def test_interrupted_import_leaves_nothing() -> None:
    def records():
        yield RawRecord("f", "item 0", study=_study("NCT00000001", updated="2020-01-01"))
        yield RawRecord("f", "item 1", study=_study("NCT00000002"))
        yield RawRecord("f", "item 2", study=_study("NCT00000003"))
        raise KeyboardInterrupt

    with Store(":memory:") as store:
        _ingest(store, [_study("NCT00000001", updated="2019-01-01")], source="before")
        before = store.table_counts()
        current = store.con.execute("SELECT version FROM study_versions").fetchall()
        with pytest.raises(KeyboardInterrupt):
            # batch_size=1: two batches were committed before the interruption
            store.import_records(records(), source="f", batch_size=1)
        assert store.table_counts() == before
        assert (
            store.con.execute("SELECT version FROM study_versions WHERE is_current").fetchall()
            == current
        )


def test_killed_import_is_discarded_on_open(tmp_path: Path) -> None:
    db = tmp_path / "k.duckdb"
    with Store(db) as store:
        _ingest(store, [_study("NCT00000001")], source="done")
        before = store.table_counts()
        # what a killed process leaves: committed batches of a snapshot still 'importing'
        snapshot_id = store._new_snapshot("file", "killed", None, "importing")
        from irtscope.trials._batch import prepare as _prepare

        store.con.execute("BEGIN")
        store._ingest_batch(
            _prepare("item 0", RawRecord("killed", "item 0", study=_study("NCT00000009"))),
            snapshot_id,
            "file:x",
            "killed",
            None,
            None,
        )
        store.con.execute("COMMIT")
        assert store.study_count() == 2
    with Store(db) as store:
        assert store.table_counts() == before
        assert store.study_count() == 1


def test_bad_records_are_reported_not_raised() -> None:
    batch = [
        RawRecord("f.jsonl", "line 1", error="invalid JSON: unexpected end"),
        RawRecord("f.jsonl", "line 2", study={"protocolSection": {}}),
        RawRecord("f.jsonl", "line 3", study=_study("NCT123")),
        RawRecord("f.jsonl", "line 4", study=_study("NCT00000004")),
    ]
    with Store(":memory:") as store:
        report = store.import_records(batch, source="f.jsonl")
        assert report.new_studies == 1
        reasons = {(f.position, f.nct_id): f.reason for f in report.failures}
        assert reasons[("line 1", None)].startswith("invalid JSON")
        assert reasons[("line 2", None)] == "no NCT id"
        assert "invalid NCT id" in reasons[("line 3", "NCT123")]


def test_every_row_carries_its_snapshot() -> None:
    with Store(":memory:") as store:
        _ingest(store, [_study("NCT00000001")], source="one.json")
        rows = store.con.execute(
            "SELECT s.source, s.retrieved_at IS NOT NULL FROM conditions c "
            "JOIN snapshots s USING (snapshot_id)"
        ).fetchall()
        assert rows == [("one.json", True)]
        assert store.snapshot_info()["source"] == "one.json"


def test_partial_dates_keep_precision() -> None:
    assert parse_partial_date("2015")[1] == "yyyy"
    assert parse_partial_date("2015-09")[1:] == ("yyyy-mm", parse_partial_date("2015-09-01")[2])
    assert parse_partial_date("2015-09-17")[1] == "yyyy-mm-dd"
    assert parse_partial_date("sometime") == ("sometime", None, None)
    assert parse_partial_date(None) == (None, None, None)


def test_normalize_real_record(ctgov_dir: Path) -> None:
    """Hand-checked values of NCT02552212 in aact_fixtures_13 (read from the record)."""
    records = _load(ctgov_dir / "aact_fixtures_13.json.gz")
    study = next(
        r for r in records if r["protocolSection"]["identificationModule"]["nctId"] == "NCT02552212"
    )
    rows = normalize_study(copy.deepcopy(study))
    [row] = rows["studies"]
    assert row["start_date"] == "2015-09"
    assert row["start_date_precision"] == "yyyy-mm"
    assert row["start_date_type"] == "ACTUAL"
    assert row["overall_status"] == "COMPLETED"
    assert row["first_submitted_date"] == "2015-09-15"
    assert row["first_posted_date"] == "2015-09-17"
    assert row["first_posted_date_type"] == "ESTIMATED"
    assert row["has_results"] is True


def test_partial_record_normalizes() -> None:
    """aact_fixtures_13 has records with only an identification module."""
    rows = normalize_study({"protocolSection": {"identificationModule": {"nctId": "NCT1"}}})
    assert rows["studies"][0]["overall_status"] is None
    assert rows["locations"] == [] and rows["sponsors"] == []


def test_raw_column_views_the_records_own_bytes() -> None:
    from irtscope.trials._batch import RawColumn as _RawColumn

    column = _RawColumn()
    records = [b'{"a":1}', b'{"b":"\xc3\xa9 long enough to be out of line"}', b"{}"]
    for raw in records:
        column.append(raw)
    view = column.arrow()
    view.validate(full=True)
    assert view.to_pylist() == [r.decode() for r in records]  # short ones inline, others not
    assert column.arrow([True, False, True]).to_pylist() == ['{"a":1}', "{}"]
    column.reset().append(b'{"c":3}')  # a new batch leaves the old column as it was
    assert view.to_pylist() == [r.decode() for r in records]
    assert column.arrow().to_pylist() == ['{"c":3}']
    assert len(column) == 1 and column[0] == b'{"c":3}'


def test_second_store_on_an_open_file_says_why(tmp_path: Path) -> None:
    db = tmp_path / "busy.duckdb"
    with Store(db), pytest.raises(DataError, match="open in another Store of this process"):
        Store(db).open()
    with Store(db, read_only=True) as first, Store(db, read_only=True) as second:
        assert first.study_count() == second.study_count() == 0


def test_same_update_date_conflict_is_reported_and_settled_alike() -> None:
    """Issue 13: one NCT id twice in a file, same last update date, other content: the last
    one silently won, so the winner flipped with file order. Now the version with the
    greatest id wins in either order, and the conflict is reported."""
    first = _study("NCT00000001", updated="2024-01-02", title="Title one")
    second = _study("NCT00000001", updated="2024-01-02", title="Title two")
    winners = set()
    for order in ([first, second], [second, first]):
        with Store(":memory:") as store:
            report = _ingest(store, order, source="twice.json")
            current = store.get_study("NCT00000001")["protocolSection"]
            winners.add(current["identificationModule"]["briefTitle"])
            assert report.failures == [] and store.study_count() == 1
            conflicts = [(c.path, c.nct_id) for c in report.conflicts]
            assert conflicts == [("twice.json", "NCT00000001")]
            assert "same last update" in report.conflicts[0].reason
            # a newer date is no conflict
            later = _ingest(store, [_study("NCT00000001", updated="2024-02-01")], source="b")
            assert later.conflicts == []
    assert len(winners) == 1


def test_stale_spill_folder_is_removed_on_open(tmp_path: Path) -> None:
    """Issue 13: a killed import left ``<store>.duckdb.tmp/`` behind; the next writer that
    opens the store (it holds the file's lock, so no one else spills there) removes it."""
    db = tmp_path / "s.duckdb"
    with Store(db):
        pass
    stale = tmp_path / "s.duckdb.tmp"
    stale.mkdir()
    (stale / "duckdb_temp_storage_S32K-0.tmp").write_bytes(b"spilled")
    with Store(db, read_only=True):
        assert stale.exists()  # a reader may share the file with a live writer: left alone
    with Store(db) as store:
        assert not stale.exists()
        assert store.study_count() == 0
    other = tmp_path / "s.duckdb.tmp"
    other.mkdir()
    (other / "notes.txt").write_text("mine", encoding="utf-8")
    with Store(db):
        assert (other / "notes.txt").exists()  # not DuckDB's: kept
