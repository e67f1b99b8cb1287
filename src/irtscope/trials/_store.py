"""DuckDB store of registry records: raw JSON of every version plus normalized tables.

One file holds everything. A :class:`Store` owns the only writing connection (DuckDB allows
one writer per file); the file is attached with 2,048-row groups (see :mod:`._duckdb`).
Batches are prepared in :mod:`._batch`. Writes are bulk inserts of Arrow tables: one
transaction per harvested page (together with the new page token, so a harvest resumes
exactly), and one per batch of an imported file, whose
snapshot stays ``importing`` until its last batch and is removed if the import is
interrupted, so a half-written snapshot is never left behind.

Tables (``schema_version`` records the layout)::

    snapshots        one row per import of a file / per harvest: source, retrieved_at,
                     data_timestamp (registry /version for harvests), status
    study_versions   raw JSON of every distinct version of every study (``raw``: the record
                     as written, minified if it was pretty-printed; query it with
                     ``raw::JSON``), keyed by (nct_id, version = XXH3-128 of ``raw``; another
                     writing of the same content is recognised as the same version by value);
                     is_current marks the newest one; merged_into names the study an alias
                     was merged into
    entries          every record read (hits), duplicates included: origin, position,
                     source, query, nct_id, version, outcome -> provenance and "N hits -> M"
    studies, sponsors, conditions, keywords, interventions, arm_groups, locations,
    secondary_ids, aliases
                     normalized rows of every version (nct_id, version, snapshot_id, ...);
                     ``current_<table>`` views keep the current version only
    queries, harvests, harvest_queries
                     query log and resumable harvest state (page token, pages done)

Other modules may add their own tables through ``store.con`` (prefix them with their area).
"""

from __future__ import annotations

import datetime as dt
import logging
import os
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

import msgspec
import orjson
import pyarrow as pa
import xxhash

from irtscope._errors import DataError
from irtscope._gc import gc_paused
from irtscope.trials._batch import Batch, ContentMatcher, RawColumn, load_json
from irtscope.trials._duckdb import ALIAS, BulkMode, attach
from irtscope.trials._duckdb import first_row as _one
from irtscope.trials._normalize import (
    BOOL_COLUMNS,
    DATE_COLUMNS,
    INT_COLUMNS,
    LIST_COLUMNS,
    TABLE_COLUMNS,
)
from irtscope.trials._sources_files import (
    DEFAULT_BATCH_SIZE,
    ImportFailure,
    ImportReport,
    RawRecord,
)

logger = logging.getLogger(__name__)

SCHEMA_VERSION = 1
ProgressCallback = Callable[[int, "int | None", str], None]


def default_db_path() -> Path:
    """``$IRTSCOPE_DB`` or ``<user data dir>/irtscope/trials.duckdb``."""
    env = os.environ.get("IRTSCOPE_DB")
    if env:
        return Path(env)
    import platformdirs

    return Path(platformdirs.user_data_dir("irtscope")) / "trials.duckdb"


def _sql_type(column: str) -> str:
    if column in LIST_COLUMNS:
        return "VARCHAR[]"
    if column in INT_COLUMNS:
        return "BIGINT"
    if column in BOOL_COLUMNS:
        return "BOOLEAN"
    if column in DATE_COLUMNS:
        return "DATE"
    return "VARCHAR"


_ENTRY_SCHEMA = pa.schema(
    [
        ("origin", pa.string()),
        ("locator", pa.string()),
        ("snapshot_id", pa.int64()),
        ("source", pa.string()),
        ("query_key", pa.string()),
        ("query_name", pa.string()),
        ("nct_id", pa.string()),
        ("version", pa.string()),
        ("outcome", pa.string()),
    ]
)


def _ddl() -> list[str]:
    statements = [
        "CREATE TABLE IF NOT EXISTS schema_version (version INTEGER, applied_at TIMESTAMP)",
        """CREATE TABLE IF NOT EXISTS snapshots (
            snapshot_id BIGINT PRIMARY KEY, kind VARCHAR, source VARCHAR,
            retrieved_at TIMESTAMP, data_timestamp VARCHAR, status VARCHAR, detail JSON)""",
        """CREATE TABLE IF NOT EXISTS study_versions (
            nct_id VARCHAR NOT NULL, version VARCHAR NOT NULL, seq BIGINT,
            snapshot_id BIGINT, last_update_posted VARCHAR, version_holder VARCHAR,
            raw VARCHAR, is_current BOOLEAN DEFAULT FALSE, merged_into VARCHAR)""",
        """CREATE TABLE IF NOT EXISTS entries (
            origin VARCHAR, locator VARCHAR, snapshot_id BIGINT, source VARCHAR,
            query_key VARCHAR, query_name VARCHAR, nct_id VARCHAR, version VARCHAR,
            outcome VARCHAR)""",
        """CREATE TABLE IF NOT EXISTS imported_files (
            content_hash VARCHAR, path VARCHAR, snapshot_id BIGINT, imported_at TIMESTAMP)""",
        """CREATE TABLE IF NOT EXISTS queries (
            query_key VARCHAR PRIMARY KEY, name VARCHAR, params JSON,
            first_run TIMESTAMP)""",
        """CREATE TABLE IF NOT EXISTS harvests (
            harvest_id BIGINT PRIMARY KEY, snapshot_id BIGINT, base_url VARCHAR,
            query_keys VARCHAR[], data_timestamp VARCHAR, started_at TIMESTAMP,
            finished_at TIMESTAMP, status VARCHAR)""",
        """CREATE TABLE IF NOT EXISTS harvest_queries (
            harvest_id BIGINT, query_key VARCHAR, name VARCHAR, params JSON,
            total_count BIGINT, page_token VARCHAR, pages_done BIGINT, hits BIGINT,
            status VARCHAR, updated_at TIMESTAMP)""",
        # every page token a harvest followed, to stop a registry that repeats them
        """CREATE TABLE IF NOT EXISTS harvest_tokens (
            harvest_id BIGINT, query_key VARCHAR, page_no BIGINT, token VARCHAR)""",
    ]
    for table, columns in TABLE_COLUMNS.items():
        cols = ", ".join(f"{c} {_sql_type(c)}" for c in columns)
        extra = ", is_current BOOLEAN DEFAULT FALSE" if table == "studies" else ""
        statements.append(
            f"CREATE TABLE IF NOT EXISTS {table} (nct_id VARCHAR NOT NULL, "
            f"version VARCHAR NOT NULL, snapshot_id BIGINT, {cols}{extra})"
        )
        statements.append(
            f"CREATE OR REPLACE VIEW current_{table} AS SELECT t.* FROM {table} t "
            "JOIN study_versions v USING (nct_id, version) WHERE v.is_current"
        )
    statements.append(
        "CREATE OR REPLACE VIEW study_queries AS SELECT nct_id, query_name, query_key, "
        "count(*) AS hits FROM entries WHERE query_key IS NOT NULL GROUP BY ALL"
    )
    return statements


class Store:
    """The trials database (one DuckDB file).

    Parameters
    ----------
    path : str or Path, optional
        Database file; ``None`` uses :func:`default_db_path`, ``":memory:"`` a throwaway one.
    read_only : bool
        Open without writing (several readers may share a file; only one writer).

    Examples
    --------
    >>> with Store(":memory:") as store:
    ...     store.study_count()
    0
    """

    def __init__(self, path: str | Path | None = None, read_only: bool = False) -> None:
        self.path = path
        self.read_only = read_only
        self._con: Any = None
        self._attached = False
        #: whether the aliases table has rows (None: not looked yet); once True, stays True
        self._aliases_stored: bool | None = None

    # -- connection ---------------------------------------------------------------------
    def open(self) -> Store:
        import duckdb

        if self._con is not None:
            return self
        target = default_db_path() if self.path is None else self.path
        try:
            if str(target) == ":memory:":
                self._con = duckdb.connect(":memory:")
            else:
                Path(target).parent.mkdir(parents=True, exist_ok=True)
                self._con = attach(duckdb, Path(target), self.read_only)
                self._attached = True
        except duckdb.Error as exc:
            hint = (
                " (it is open in another Store of this process: close that one first)"
                if "already attached" in str(exc)
                else ""
            )
            raise DataError(f"cannot open trials database {target}{hint}: {exc}") from exc
        if not self.read_only:
            try:
                self._migrate()
                self._recover()
            except BaseException:
                self.close()
                raise
        return self

    def close(self) -> None:
        if self._con is not None:
            self._con.close()
            self._con = None

    def __enter__(self) -> Store:
        return self.open()

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def con(self) -> Any:
        """The DuckDB connection (opened on first use)."""
        if self._con is None:
            self.open()
        return self._con

    def _migrate(self) -> None:
        con = self._con
        con.execute("BEGIN")
        for statement in _ddl():
            con.execute(statement)
        row = _one(con.execute("SELECT max(version) FROM schema_version"))
        if row[0] is None:
            con.execute("INSERT INTO schema_version VALUES (?, ?)", [SCHEMA_VERSION, _now()])
        elif row[0] > SCHEMA_VERSION:
            con.execute("ROLLBACK")
            raise DataError(
                f"trials database schema {row[0]} is newer than this irtscope "
                f"({SCHEMA_VERSION}); upgrade irtscope"
            )
        con.execute("COMMIT")

    # -- snapshots ----------------------------------------------------------------------
    def _new_snapshot(
        self,
        kind: str,
        source: str,
        data_timestamp: str | None,
        status: str,
        detail: dict[str, Any] | None = None,
    ) -> int:
        snapshot_id = _one(
            self.con.execute("SELECT coalesce(max(snapshot_id), 0) + 1 FROM snapshots")
        )[0]
        self.con.execute(
            "INSERT INTO snapshots VALUES (?, ?, ?, ?, ?, ?, ?)",
            [
                snapshot_id,
                kind,
                source,
                _now(),
                data_timestamp,
                status,
                orjson.dumps(detail or {}).decode(),
            ],
        )
        return int(snapshot_id)

    # -- ingest -------------------------------------------------------------------------
    def import_records(
        self,
        records: Iterable[RawRecord],
        source: str,
        kind: str = "file",
        progress: ProgressCallback | None = None,
        batch_size: int = DEFAULT_BATCH_SIZE,
    ) -> ImportReport:
        """Store the records of one file as one snapshot (see :func:`import_paths`).

        Records are prepared as they stream in and written in batches, each batch its own
        transaction so memory stays flat on huge files. The snapshot stays ``importing``
        until the last batch; if anything interrupts the import (an error, Ctrl-C, a killed
        process) its rows are removed (at once, or when the store is next opened), so a
        half-written snapshot is never left behind. A file whose content was imported before
        is read again (so its counts are reported) but adds nothing, not even a snapshot.
        """
        path = source.split("!", 1)[0]
        origin = _file_hash(Path(path)) if Path(path).is_file() else f"source:{source}"
        report = ImportReport()
        con = self.con
        bulk = self._bulk_mode()
        snapshot_id = self._new_snapshot(kind, source, None, "importing")
        # Content never imported before: its entries cannot be logged yet, and positions
        # within one file are unique, so batches of its own records skip the check for
        # logged entries (a join with every stored entry, slower with each batch).
        first_time = not _one(
            con.execute("SELECT EXISTS (SELECT 1 FROM entries WHERE origin = ?)", [origin])
        )[0]
        changed = False
        newest: str | None = None
        # A batch holds hundreds of thousands of small acyclic objects (structs, row
        # tuples); the cyclic GC rescanning them on every batch cost more than the parse.
        with gc_paused():
            try:
                raws = RawColumn()
                batch = Batch(raws)

                def flush() -> None:
                    nonlocal changed, newest, batch
                    con.execute("BEGIN")
                    try:
                        counts = self._ingest_batch(
                            batch,
                            snapshot_id,
                            origin,
                            source,
                            None,
                            None,
                            unlogged=first_time and not batch.members,
                        )
                        con.execute("COMMIT")
                    except BaseException:
                        con.execute("ROLLBACK")
                        raise
                    changed |= counts.pop("_changed")
                    holder = counts.pop("_newest")
                    if holder and (newest is None or holder > newest):
                        newest = holder
                    _add_counts(report, counts)
                    if progress is not None:
                        progress(len(batch), None, Path(path).name)
                    batch = Batch(raws)

                add = batch.add
                for record in records:
                    # Zip members share positions ("line 1" in each): name the member too, so
                    # entries of different members are not taken for the same entry.
                    if record.path == source:
                        add(record.position, record)
                    else:
                        batch.members = True
                        add(f"{_member(source, record.path)} {record.position}", record)
                    if len(batch) >= batch_size:
                        flush()
                        bulk.after_batch()
                        add = batch.add
                if len(batch):
                    bulk.last_batch()
                    flush()
            except BaseException:
                self._discard_snapshot(snapshot_id)
                raise
            finally:
                bulk.finish()
        if changed:
            con.execute("BEGIN")
            # A file has no /version stamp: its newest record export date stands in.
            con.execute(
                "UPDATE snapshots SET data_timestamp = ?, status = 'complete' "
                "WHERE snapshot_id = ?",
                [newest, snapshot_id],
            )
            con.execute(
                "INSERT INTO imported_files VALUES (?, ?, ?, ?)",
                [origin, source, snapshot_id, _now()],
            )
            con.execute("COMMIT")
        else:
            self._discard_snapshot(snapshot_id)
            report.already_imported = 1 if report.entries_read else 0
        return report

    def _bulk_mode(self) -> BulkMode:
        """DuckDB settings for one bulk import (file stores only; see :class:`BulkMode`)."""
        target = default_db_path() if self.path is None else self.path
        return BulkMode(None if str(target) == ":memory:" else self.con)

    def _discard_snapshot(self, snapshot_id: int) -> None:
        """Remove every row of an unfinished snapshot and restore the current versions."""
        con = self.con
        con.execute("BEGIN")
        try:
            touched = {
                r[0]
                for r in con.execute(
                    "SELECT DISTINCT nct_id FROM study_versions WHERE snapshot_id = ?",
                    [snapshot_id],
                ).fetchall()
            }
            for table in (*TABLE_COLUMNS, "study_versions", "entries", "imported_files"):
                con.execute(f"DELETE FROM {table} WHERE snapshot_id = ?", [snapshot_id])
            con.execute("DELETE FROM snapshots WHERE snapshot_id = ?", [snapshot_id])
            # Undo alias merges whose alias record went with the snapshot.
            touched |= {
                r[0]
                for r in con.execute(
                    """UPDATE study_versions SET merged_into = NULL
                       WHERE merged_into IS NOT NULL AND NOT EXISTS (
                         SELECT 1 FROM aliases a WHERE a.alias = study_versions.nct_id
                         AND a.nct_id = study_versions.merged_into)
                       RETURNING nct_id"""
                ).fetchall()
            }
            self._merge_aliases()
            if touched:
                self._refresh_current(touched)
            con.execute("COMMIT")
        except BaseException:
            con.execute("ROLLBACK")
            raise

    def _recover(self) -> None:
        """Discard file snapshots a killed process left half-written."""
        rows = self.con.execute(
            "SELECT snapshot_id FROM snapshots WHERE status = 'importing'"
        ).fetchall()
        for (snapshot_id,) in rows:
            logger.warning("discarding interrupted import (snapshot %s)", snapshot_id)
            self._discard_snapshot(int(snapshot_id))

    def _ingest_batch(
        self,
        batch: Batch,
        snapshot_id: int,
        origin: str,
        source: str,
        query_key: str | None,
        query_name: str | None,
        unlogged: bool = False,
    ) -> dict[str, Any]:
        """Insert one prepared batch inside the caller's transaction; return counts.

        ``unlogged``: the caller knows none of these entries can be logged already.

        Set-based throughout: one query finds which (NCT id, version) pairs and NCT ids are
        already stored, then each table gets one Arrow table and one ``INSERT``.
        """
        con = self.con
        batch.drop_invalid_utf8()
        ncts = batch.ncts
        n = len(ncts)
        counts: dict[str, Any] = {
            "entries_read": n,
            "new_studies": 0,
            "new_versions": 0,
            "identical": 0,
            "older_versions": 0,
            "alias_merged": 0,
            "failures": batch.failures,
            "conflicts": [],
            "_changed": False,
            "_newest": max(filter(None, batch.holders), default=None),
        }
        if not n:
            return counts

        versions = batch.versions()
        nct_array = pa.array(ncts, pa.string())
        con.register(
            "_batch_keys",
            pa.table({"nct_id": nct_array, "version": pa.array(versions, pa.string())}),
        )
        try:
            # Stored versions of the batch's studies. A semi join from the batch lets DuckDB
            # skip row groups whose NCT id range the batch does not touch (an IN subquery
            # scanned the whole column for every batch, which grew with the store).
            stored_pairs = con.execute(
                "SELECT DISTINCT v.nct_id, v.version FROM study_versions v "
                "SEMI JOIN _batch_keys b ON v.nct_id = b.nct_id "
                "WHERE v.nct_id BETWEEN ? AND ?",
                [min(ncts), max(ncts)],
            ).fetchall()
        finally:
            con.unregister("_batch_keys")
        batch_pairs = set(zip(ncts, versions, strict=True))
        known_ids = {nct for nct, _ in stored_pairs}
        known_versions = {pair for pair in stored_pairs if pair in batch_pairs}

        # Decided by bytes here; a known study in other bytes is decided by content below,
        # in order within each study (an earlier record of a study may be a later's twin).
        outcomes: list[str] = []
        deferred: dict[str, list[int]] = {}  # NCT id -> records left to compare by content
        seeds: dict[str, int] = {}  # NCT id new in this batch -> its first record
        for i, key in enumerate(zip(ncts, versions, strict=True)):
            nct = key[0]
            if nct in deferred:
                deferred[nct].append(i)
                outcomes.append("")
            elif key in known_versions:
                outcomes.append("identical")
            elif nct in known_ids:
                # Same study, other bytes: the same content written differently (escapes,
                # key order, number format) is the stored version, not a new one.
                deferred[nct] = [i]
                outcomes.append("")
            else:
                outcomes.append("new")
                seeds[nct] = i
                known_versions.add(key)
                known_ids.add(nct)
        if deferred:
            ContentMatcher(con, batch, versions).resolve(deferred, seeds, outcomes)
        version_array = pa.array(versions, pa.string())
        n_identical = outcomes.count("identical")
        kept = [o != "identical" for o in outcomes]
        keep = pa.array(kept, pa.bool_()) if n_identical else None

        if n_identical < n:
            counts["_changed"] = True
            # A study stored for the first time, once in this batch, is current at once
            # (unless an alias merge says otherwise, which _merge_aliases applies). Only
            # studies with several versions need the window over their versions, whose
            # UPDATE scans the whole table: per batch, that made imports quadratic.
            stored = Counter(nct for nct, k in zip(ncts, kept, strict=True) if k)
            current = [
                o == "new" and stored[nct] == 1 for nct, o in zip(ncts, outcomes, strict=True)
            ]
            touched = {nct for nct, k, c in zip(ncts, kept, current, strict=True) if k and not c}
            current_array = pa.array(current, pa.bool_())
            seq0 = _one(con.execute("SELECT coalesce(max(seq), 0) FROM study_versions"))[0]
            version_table = pa.table(
                {
                    "nct_id": nct_array,
                    "version": version_array,
                    "last_update_posted": pa.array(batch.last_updates, pa.string()),
                    "version_holder": pa.array(batch.holders, pa.string()),
                    "is_current": current_array,
                }
            )
            if keep is not None:
                version_table = version_table.filter(keep)
            # The records' own bytes (checked UTF-8), kept ones only: Arrow cannot filter
            # a string_view column, so the column is built from the kept records.
            raw = batch.raws.arrow(kept if keep is not None else None)
            version_table = version_table.append_column("raw", raw)
            # seq numbers the stored versions in order of arrival (the last tie-breaker).
            seq = pa.array(range(seq0 + 1, seq0 + 1 + version_table.num_rows), pa.int64())
            version_table = version_table.append_column("seq", seq)
            con.register("_new_versions", version_table)
            try:
                con.execute(
                    "INSERT INTO study_versions (nct_id, version, seq, snapshot_id, "
                    "last_update_posted, version_holder, raw, is_current) SELECT nct_id, "
                    "version, seq, ?, last_update_posted, version_holder, raw, is_current "
                    "FROM _new_versions",
                    [snapshot_id],
                )
            finally:
                con.unregister("_new_versions")
            del raw, version_table
            per_record = {"nct_id": nct_array, "version": version_array}
            for table in TABLE_COLUMNS:
                extra = {"is_current": current_array} if table == "studies" else {}
                rows = batch.child_table(table, {**per_record, **extra}, keep)
                if rows is None or not rows.num_rows:
                    continue
                # Columns in the table's own order (see _ddl), so the rows go in as they
                # are: a third cheaper than registering a view and inserting from it.
                snapshot = pa.repeat(pa.scalar(snapshot_id, pa.int64()), rows.num_rows)
                con.from_arrow(rows.add_column(2, "snapshot_id", snapshot)).insert_into(table)
            if batch.tables["aliases"]:
                self._aliases_stored = True
            if self._aliases_stored is None:
                self._aliases_stored = bool(
                    _one(con.execute("SELECT EXISTS (SELECT 1 FROM aliases)"))[0]
                )
            # Only a store that lists aliases can have records to merge (most have none).
            counts["alias_merged"] = self._merge_aliases() if self._aliases_stored else 0
            if touched:
                self._refresh_current(touched)
                counts["conflicts"] = self._conflicts(touched, snapshot_id, batch)

        # Entries already logged (same file content / same harvest page) are not re-added.
        entries = pa.table(
            {
                "origin": pa.repeat(origin, n),
                "locator": pa.array(batch.locators, pa.string()),
                "snapshot_id": pa.repeat(pa.scalar(snapshot_id, pa.int64()), n),
                "source": pa.repeat(source, n),
                "query_key": pa.repeat(pa.scalar(query_key, pa.string()), n),
                "query_name": pa.repeat(pa.scalar(query_name, pa.string()), n),
                "nct_id": nct_array,
                "version": version_array,
                "outcome": pa.array(outcomes, pa.string()),
            },
            schema=_ENTRY_SCHEMA,
        )
        con.register("_new_entries", entries)
        try:
            if unlogged:
                added = _one(con.execute("INSERT INTO entries SELECT * FROM _new_entries"))[0]
            else:
                added = _one(
                    con.execute(
                        "INSERT INTO entries SELECT n.* FROM _new_entries n ANTI JOIN entries e "
                        "ON e.origin = n.origin AND e.locator = n.locator"
                    )
                )[0]
        finally:
            con.unregister("_new_entries")
        if added:
            counts["_changed"] = True

        # Classify other versions as newer (now current) or older (kept as history).
        other = [
            k
            for k, o in zip(zip(ncts, versions, strict=True), outcomes, strict=True)
            if o == "other_version"
        ]
        if other:
            current = self._current_flags(other)
            for key in other:
                if current.get(key):
                    counts["new_versions"] += 1
                else:
                    counts["older_versions"] += 1
        counts["new_studies"] = outcomes.count("new")
        counts["identical"] = n_identical
        return counts

    def _current_flags(self, keys: list[tuple[str, str]]) -> dict[tuple[str, str], bool]:
        con = self.con
        con.register(
            "_flag_keys",
            pa.table({"nct_id": [k[0] for k in keys], "version": [k[1] for k in keys]}),
        )
        try:
            rows = con.execute(
                "SELECT v.nct_id, v.version, v.is_current FROM study_versions v "
                "SEMI JOIN _flag_keys k ON v.nct_id = k.nct_id AND v.version = k.version"
            ).fetchall()
        finally:
            con.unregister("_flag_keys")
        return {(r[0], r[1]): bool(r[2]) for r in rows}

    def _merge_aliases(self) -> int:
        """Mark versions whose NCT id is an alias of another study as merged into it."""
        row = _one(
            self.con.execute(
                """UPDATE study_versions SET merged_into = a.nct_id, is_current = FALSE
               FROM (SELECT DISTINCT alias, nct_id FROM aliases WHERE alias <> nct_id) a
               WHERE study_versions.nct_id = a.alias AND study_versions.merged_into IS NULL"""
            )
        )
        merged = int(row[0]) if row else 0
        if merged:
            self.con.execute(
                """UPDATE studies SET is_current = FALSE FROM study_versions v
                   WHERE studies.nct_id = v.nct_id AND studies.version = v.version
                   AND v.merged_into IS NOT NULL AND studies.is_current"""
            )
        return merged

    def _refresh_current(self, nct_ids: set[str]) -> None:
        """Recompute ``is_current`` for these studies: newest version, not merged."""
        con = self.con
        con.register("_touched", pa.table({"nct_id": sorted(nct_ids)}))
        try:
            con.execute(
                """UPDATE study_versions SET is_current = (r.rn = 1 AND r.merged_into IS NULL)
                   FROM (SELECT nct_id, version, merged_into, row_number() OVER (
                           PARTITION BY nct_id ORDER BY last_update_posted DESC NULLS LAST,
                           version_holder DESC NULLS LAST, version DESC) AS rn
                         FROM study_versions WHERE nct_id IN (SELECT nct_id FROM _touched)) r
                   WHERE study_versions.nct_id = r.nct_id AND study_versions.version = r.version
                """
            )
            con.execute(
                """UPDATE studies SET is_current = v.is_current FROM study_versions v
                   WHERE studies.nct_id = v.nct_id AND studies.version = v.version
                   AND studies.nct_id IN (SELECT nct_id FROM _touched)"""
            )
        finally:
            con.unregister("_touched")

    def _conflicts(self, nct_ids: set[str], snapshot_id: int, batch: Batch) -> list[ImportFailure]:
        """Studies whose current version ties with another on both dates that order versions
        (last update posted, export date), one of them added by this snapshot.

        Nothing in the record says which is newer: the greatest version id is current
        (see :meth:`_refresh_current`), so the choice does not depend on file order, and
        the tie is reported for a human to look at.
        """
        con = self.con
        con.register("_touched", pa.table({"nct_id": sorted(nct_ids)}))
        try:
            rows = con.execute(
                """SELECT c.nct_id, c.version, c.last_update_posted, count(*)
                   FROM study_versions c JOIN study_versions v ON v.nct_id = c.nct_id
                    AND v.last_update_posted IS NOT DISTINCT FROM c.last_update_posted
                    AND v.version_holder IS NOT DISTINCT FROM c.version_holder
                   WHERE c.is_current AND c.nct_id IN (SELECT nct_id FROM _touched)
                   GROUP BY ALL HAVING count(*) > 1 AND bool_or(v.snapshot_id = ?)
                   ORDER BY 1""",
                [snapshot_id],
            ).fetchall()
        finally:
            con.unregister("_touched")
        where = {nct: (path, position) for nct, path, position in zip(
            batch.ncts, batch.paths, batch.positions, strict=True)}  # fmt: skip
        return [
            ImportFailure(
                *where.get(nct, (batch.paths[0] if batch.paths else "", None)),
                nct,
                f"{n} versions have the same last update date ({last_update or 'none'}) and "
                f"export date but other content; version {version[:12]} is current (the "
                "greatest version id, whatever the file order)",
            )
            for nct, version, last_update, n in rows
        ]

    # -- harvest state ------------------------------------------------------------------
    def log_query(self, key: str, name: str, params: dict[str, str]) -> None:
        """Record a query in the query log (first run time kept)."""
        self.con.execute(
            "INSERT INTO queries VALUES (?, ?, ?, ?) ON CONFLICT DO NOTHING",
            [key, name, orjson.dumps(params).decode(), _now()],
        )

    def open_harvest(
        self,
        base_url: str,
        queries: list[tuple[str, str, dict[str, str]]],
        data_timestamp: str | None,
        refresh: bool = False,
    ) -> tuple[int, int, bool]:
        """Find the unfinished (or, unless ``refresh``, finished) harvest of exactly these
        queries against ``base_url``, or start one. Returns ``(harvest_id, snapshot_id,
        resumed)``; state is committed at once so a crash right after still resumes."""
        con = self.con
        keys = sorted({q[0] for q in queries})
        rows = con.execute(
            "SELECT harvest_id, snapshot_id, status FROM harvests WHERE base_url = ? "
            "AND list_sort(query_keys) = ?::VARCHAR[] ORDER BY harvest_id DESC LIMIT 1",
            [base_url, keys],
        ).fetchall()
        if rows and (rows[0][2] != "done" or not refresh):
            return int(rows[0][0]), int(rows[0][1]), True
        con.execute("BEGIN")
        try:
            snapshot_id = self._new_snapshot(
                "api",
                base_url,
                data_timestamp,
                "in_progress",
                {"queries": [{"key": k, "name": n, "params": p} for k, n, p in queries]},
            )
            harvest_id = _one(con.execute("SELECT coalesce(max(harvest_id), 0) + 1 FROM harvests"))[
                0
            ]
            con.execute(
                "INSERT INTO harvests VALUES (?, ?, ?, ?, ?, ?, NULL, 'running')",
                [harvest_id, snapshot_id, base_url, keys, data_timestamp, _now()],
            )
            for key, name, params in queries:
                self.log_query(key, name, params)
                con.execute(
                    "INSERT INTO harvest_queries VALUES (?, ?, ?, ?, NULL, NULL, 0, 0, "
                    "'pending', ?)",
                    [harvest_id, key, name, orjson.dumps(params).decode(), _now()],
                )
            con.execute("COMMIT")
        except BaseException:
            con.execute("ROLLBACK")
            raise
        return int(harvest_id), int(snapshot_id), False

    def harvest_query_state(self, harvest_id: int, key: str) -> dict[str, Any]:
        row = _one(
            self.con.execute(
                "SELECT total_count, page_token, pages_done, hits, status FROM harvest_queries "
                "WHERE harvest_id = ? AND query_key = ?",
                [harvest_id, key],
            )
        )
        if row is None:
            raise DataError(f"harvest {harvest_id} has no query {key}")
        return dict(
            zip(("total_count", "page_token", "pages_done", "hits", "status"), row, strict=True)
        )

    def set_query_total(self, harvest_id: int, key: str, total: int | None) -> None:
        self.con.execute(
            "UPDATE harvest_queries SET total_count = ?, status = 'running', updated_at = ? "
            "WHERE harvest_id = ? AND query_key = ?",
            [total, _now(), harvest_id, key],
        )

    def store_page(
        self,
        harvest_id: int,
        snapshot_id: int,
        key: str,
        name: str,
        page_no: int,
        studies: list[Any],
        next_token: str | None,
        source: str,
    ) -> dict[str, Any]:
        """Store one harvested page and advance the harvest state, atomically."""
        con = self.con
        origin = f"harvest:{harvest_id}:{key}"
        items = Batch()
        for i, study in enumerate(studies):
            items.add(f"{page_no}:{i}", _record_from_api(study, source, page_no, i))
        con.execute("BEGIN")
        try:
            counts = self._ingest_batch(items, snapshot_id, origin, name, key, name)
            counts.pop("_changed")
            counts.pop("_newest")
            con.execute(
                "UPDATE harvest_queries SET page_token = ?, pages_done = pages_done + 1, "
                "hits = hits + ?, status = ?, updated_at = ? "
                "WHERE harvest_id = ? AND query_key = ?",
                [
                    next_token,
                    len(studies),
                    "running" if next_token else "done",
                    _now(),
                    harvest_id,
                    key,
                ],
            )
            if next_token:
                con.execute(
                    "INSERT INTO harvest_tokens VALUES (?, ?, ?, ?)",
                    [harvest_id, key, page_no + 1, next_token],
                )
            con.execute("COMMIT")
        except BaseException:
            con.execute("ROLLBACK")
            raise
        return counts

    def harvest_tokens(self, harvest_id: int, key: str) -> set[str]:
        """The page tokens a harvest followed (or will follow next) for one query."""
        return {
            r[0]
            for r in self.con.execute(
                "SELECT token FROM harvest_tokens WHERE harvest_id = ? AND query_key = ?",
                [harvest_id, key],
            ).fetchall()
        }

    def harvest_entry_count(self, harvest_id: int, key: str) -> int:
        """Hits of one query of a harvest that were stored (usable studies)."""
        return int(
            _one(
                self.con.execute(
                    "SELECT count(*) FROM entries WHERE origin = ?",
                    [f"harvest:{harvest_id}:{key}"],
                )
            )[0]
        )

    def harvest_totals(self, harvest_id: int) -> tuple[int, int]:
        """``(hits, unique studies)`` of one harvest, all its queries together."""
        row = _one(
            self.con.execute(
                "SELECT count(*), count(DISTINCT coalesce(v.merged_into, e.nct_id)) "
                "FROM entries e LEFT JOIN (SELECT DISTINCT nct_id, merged_into FROM "
                "study_versions) v USING (nct_id) WHERE e.origin LIKE ?",
                [f"harvest:{harvest_id}:%"],
            )
        )
        return int(row[0]), int(row[1])

    def finish_harvest(self, harvest_id: int, snapshot_id: int) -> None:
        con = self.con
        con.execute("BEGIN")
        con.execute(
            "UPDATE harvests SET status = 'done', finished_at = ? WHERE harvest_id = ?",
            [_now(), harvest_id],
        )
        con.execute("UPDATE snapshots SET status = 'complete' WHERE snapshot_id = ?", [snapshot_id])
        con.execute("COMMIT")

    # -- queries ------------------------------------------------------------------------
    def iter_studies(self, batch_size: int = 500) -> Iterator[dict[str, Any]]:
        """The current version of every unique study (raw API v2 JSON), by NCT id."""
        cursor = self.con.cursor()
        try:
            if self._attached:  # a cursor is a new connection: point it at the store again
                cursor.execute(f"USE {ALIAS}")
            cursor.execute("SELECT raw FROM study_versions WHERE is_current ORDER BY nct_id")
            while True:
                rows = cursor.fetchmany(batch_size)
                if not rows:
                    break
                for (raw,) in rows:
                    yield load_json(raw)
        finally:
            cursor.close()

    def get_study(self, nct_id: str, version: str | None = None) -> dict[str, Any] | None:
        """One study: its current version, or a given ``version`` (history stays here)."""
        if version is None:
            row = _one(
                self.con.execute(
                    "SELECT raw FROM study_versions WHERE nct_id = ? ORDER BY is_current DESC, "
                    "seq DESC LIMIT 1",
                    [nct_id],
                )
            )
        else:
            row = _one(
                self.con.execute(
                    "SELECT raw FROM study_versions WHERE nct_id = ? AND version = ?",
                    [nct_id, version],
                )
            )
        return load_json(row[0]) if row else None

    def study_count(self) -> int:
        """Number of unique studies (current versions, aliases merged)."""
        return int(
            _one(self.con.execute("SELECT count(*) FROM study_versions WHERE is_current"))[0]
        )

    def hit_summary(self) -> dict[str, Any]:
        """``entries_read`` (all hits, duplicates included), ``unique_studies`` and, per
        query (harvests) or source file (imports), its hits and distinct studies."""
        con = self.con
        entries = int(_one(con.execute("SELECT count(*) FROM entries"))[0])
        per_query = {
            name: {"hits": int(hits), "unique": int(unique)}
            for name, hits, unique in con.execute(
                "SELECT query_name, count(*), count(DISTINCT nct_id) FROM entries "
                "WHERE query_key IS NOT NULL GROUP BY query_name ORDER BY query_name"
            ).fetchall()
        }
        per_source = {
            source: {"hits": int(hits), "unique": int(unique)}
            for source, hits, unique in con.execute(
                "SELECT source, count(*), count(DISTINCT nct_id) FROM entries "
                "WHERE query_key IS NULL GROUP BY source ORDER BY source"
            ).fetchall()
        }
        return {
            "entries_read": entries,
            "unique_studies": self.study_count(),
            "queries": per_query,
            "sources": per_source,
        }

    def queries_for(self, nct_id: str) -> list[str]:
        """Provenance: names of the queries whose hits include this study."""
        return [
            r[0]
            for r in self.con.execute(
                "SELECT DISTINCT query_name FROM entries WHERE nct_id = ? "
                "AND query_key IS NOT NULL ORDER BY 1",
                [nct_id],
            ).fetchall()
        ]

    def snapshot_info(self) -> dict[str, Any]:
        """The latest snapshot: ``source``, ``retrieved_at``, ``data_timestamp`` (plus
        ``snapshots``, the number of snapshots in the store)."""
        con = self.con
        row = _one(
            con.execute(
                "SELECT snapshot_id, kind, source, retrieved_at, data_timestamp, status "
                "FROM snapshots ORDER BY snapshot_id DESC LIMIT 1"
            )
        )
        n = int(_one(con.execute("SELECT count(*) FROM snapshots"))[0])
        if row is None:
            return {"source": None, "retrieved_at": None, "data_timestamp": None, "snapshots": 0}
        return {
            "snapshot_id": int(row[0]),
            "kind": row[1],
            "source": row[2],
            "retrieved_at": row[3].isoformat() if row[3] else None,
            "data_timestamp": row[4],
            "status": row[5],
            "snapshots": n,
        }

    def table_counts(self) -> dict[str, int]:
        """Row counts of the store's own tables (all versions) for reports."""
        names = ["snapshots", "study_versions", "entries", *TABLE_COLUMNS]
        counts = _one(
            self.con.execute(
                "SELECT " + ", ".join(f"(SELECT count(*) FROM {name})" for name in names)
            )
        )
        return {name: int(count) for name, count in zip(names, counts, strict=True)}


def _record_from_api(study: Any, source: str, page_no: int, index: int) -> RawRecord:
    """A page item: bytes as the client received them (see ``CtgovClient.page``) or a dict."""
    position = f"page {page_no} item {index}"
    if isinstance(study, bytes | bytearray | memoryview | msgspec.Raw):
        return RawRecord(source, position, raw=bytes(study))
    if not isinstance(study, dict):
        return RawRecord(source, position, error="not an API v2 study object")
    return RawRecord(source, position, study=study)


def _member(source: str, path: str) -> str:
    """``path`` relative to ``source`` (a zip member's name), or ``path`` itself."""
    return path[len(source) + 1 :] if path.startswith(source + "!") else path


def _add_counts(report: ImportReport, counts: dict[str, Any]) -> None:
    report.failures.extend(counts.pop("failures"))
    report.conflicts.extend(counts.pop("conflicts"))
    for name, value in counts.items():
        setattr(report, name, getattr(report, name) + value)


def _file_hash(path: Path) -> str:
    """Content id of a file as stored (compressed bytes for .gz/.zip): ``file:xxh3_128:HEX``.

    It tells whether this content was imported before (then nothing is added) and is the
    provenance of every entry read from the file. Check it with ``xxhsum -H2 FILE``.
    """
    digest = xxhash.xxh3_128()
    with path.open("rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return "file:xxh3_128:" + digest.hexdigest()


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC).replace(tzinfo=None)
