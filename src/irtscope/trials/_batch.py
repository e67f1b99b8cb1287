"""One batch of an import, prepared for the store: rows, raw bytes, version ids.

Split from :mod:`._store` so the store module is about the database: everything here is
pure Python and Arrow (no SQL but the one twin lookup), and runs before a transaction opens.
"""

from __future__ import annotations

import struct
from typing import Any

import msgspec
import orjson
import pyarrow as pa

from irtscope.trials._normalize import (
    BOOL_COLUMNS,
    DATE_COLUMNS,
    INT_COLUMNS,
    LIST_COLUMNS,
    TABLE_COLUMNS,
    canonical_bytes,
    canonical_json,
    content_hash,
    is_valid_nct_id,
    nct_id_of,
    normalize_rows,
    version_info,
)
from irtscope.trials._record_schema import fast_rows
from irtscope.trials._sources_files import ImportFailure, RawRecord


def _arrow_type(column: str) -> pa.DataType:
    if column in LIST_COLUMNS:
        return pa.list_(pa.string())
    if column in INT_COLUMNS:
        return pa.int64()
    if column in BOOL_COLUMNS:
        return pa.bool_()
    if column in DATE_COLUMNS:
        return pa.date32()
    return pa.string()


ARROW_SCHEMAS = {
    table: pa.schema(
        [("nct_id", pa.string()), ("version", pa.string())] + [(c, _arrow_type(c)) for c in columns]
    )
    for table, columns in TABLE_COLUMNS.items()
}
ROW_TYPES = {
    table: pa.struct([schema.field(i) for i in range(2, len(schema))])
    for table, schema in ARROW_SCHEMAS.items()
}
class RawColumn:
    """The kept bytes of a batch's records, as an Arrow ``string_view`` column, uncopied.

    Converting a list of ~20 kB bytes objects into an Arrow string column copied every
    record into a fresh buffer of tens of MB per batch, grown by doubling (new pages to
    fault in, copies on every growth): a tenth of import time. A ``string_view`` column
    instead points at each record's own bytes object (one 16-byte view per record, built
    at once), so nothing is copied before DuckDB reads the column.
    """

    __slots__ = ("_raws",)

    _VIEW = struct.Struct("<i4sii")  # length, first 4 bytes, buffer index, offset
    _INLINE = struct.Struct("<i12s")  # length, the bytes themselves (12 bytes at most)

    def __init__(self) -> None:
        self._raws: list[bytes] = []

    def reset(self) -> RawColumn:
        """Start a new batch (the previous batch's column keeps its own list)."""
        self._raws = []
        return self

    def __len__(self) -> int:
        return len(self._raws)

    def append(self, raw: bytes) -> None:
        self._raws.append(raw)

    def __getitem__(self, index: int) -> bytes:
        return self._raws[index]

    def arrow(self, keep: list[bool] | None = None) -> pa.Array:
        """A ``string_view`` array over the records' bytes (those ``keep`` marks, if given;
        UTF-8 not checked here)."""
        raws = self._raws
        if keep is not None:
            raws = [raw for raw, kept in zip(raws, keep, strict=True) if kept]
        views = bytearray(16 * len(raws))
        view, inline = self._VIEW.pack_into, self._INLINE.pack_into
        for index, raw in enumerate(raws):
            if len(raw) > 12:
                view(views, 16 * index, len(raw), raw[:4], index, 0)
            else:
                inline(views, 16 * index, len(raw), raw)
        return pa.Array.from_buffers(
            pa.string_view(),
            len(raws),
            [None, pa.py_buffer(views), *map(pa.py_buffer, raws)],
        )


class Batch:
    """One batch of entries, already reduced to what the store writes.

    Each record is validated and normalized as it arrives; only its bytes and its rows are
    kept (holding parsed records is what made memory grow with the input). Child rows are
    kept as tuples per table, with the index of their record in ``recs``, so a batch is
    inserted with one Arrow table and one ``INSERT`` per table, and records found to be
    already stored are left out with one Arrow filter.
    """

    __slots__ = (
        "failures",
        "holders",
        "last_updates",
        "locators",
        "members",
        "ncts",
        "paths",
        "positions",
        "raws",
        "recs",
        "tables",
        "version_ids",
    )

    def __init__(self, raws: RawColumn | None = None) -> None:
        self.locators: list[str] = []
        self.ncts: list[str] = []
        self.last_updates: list[str | None] = []
        self.holders: list[str | None] = []
        #: the kept bytes of every record, in a buffer reused from batch to batch
        self.raws = raws.reset() if raws is not None else RawColumn()
        self.version_ids: list[str] = []
        #: where each record was read (for failures found when the batch is checked)
        self.paths: list[str] = []
        self.positions: list[str] = []
        self.failures: list[ImportFailure] = []
        #: set when a record comes from a member of the source (zip), whose positions repeat
        self.members = False
        self.tables: dict[str, list[tuple[Any, ...]]] = {table: [] for table in TABLE_COLUMNS}
        self.recs: dict[str, list[int]] = {table: [] for table in TABLE_COLUMNS}

    def __len__(self) -> int:
        return len(self.ncts) + len(self.failures)

    def add(self, locator: str, record: RawRecord) -> None:
        """Validate and normalize one record (pure, no database); a record
        that cannot be used becomes a failure (file, position, NCT id, reason).

        The record is parsed once, and only as far as the normalized tables need (the typed
        fast path of :mod:`._record_schema`; a record that does not fit it is parsed whole and
        normalized by the tolerant rules). Its kept bytes (``canonical_bytes``) are what is
        stored and hashed.
        """
        if record.error is not None:
            self._fail(record, None, record.error)
            return
        try:
            if record.raw is not None:
                canonical = canonical_bytes(record.raw)
            elif record.study is not None:
                canonical = canonical_json(record.study)
            else:
                self._fail(record, None, "empty")
                return
            fast = fast_rows(canonical)
            study = orjson.loads(canonical) if fast is None else None
        except (msgspec.DecodeError, orjson.JSONDecodeError) as exc:
            self._fail(record, None, f"invalid JSON: {exc}")
            return
        except UnicodeDecodeError as exc:
            self._fail(record, None, f"not UTF-8 text: {exc}")
            return
        except TypeError as exc:  # a dict orjson cannot write (non-string keys, objects)
            self._fail(record, None, f"unusable record: {exc}")
            return
        if fast is not None:
            nct, rows = fast.nct_id, fast.rows
            last_update, holder = fast.last_update_posted, fast.version_holder
        else:
            # Does not fit the typed schema: the tolerant dict rules decide (and word errors).
            if not isinstance(study, dict):
                self._fail(record, None, f"not a JSON object ({type(study).__name__})")
                return
            if not isinstance(study.get("protocolSection"), dict):
                self._fail(record, None, "no protocolSection: not an API v2 study")
                return
            nct = nct_id_of(study)
            try:
                rows = normalize_rows(study)
            except (TypeError, ValueError, AttributeError) as exc:
                self._fail(record, nct, f"unusable record: {exc}")
                return
            last_update, holder = version_info(study)
        if not is_valid_nct_id(nct):
            self._fail(record, nct, "no NCT id" if nct is None else f"invalid NCT id {nct!r}")
            return
        rec = len(self.ncts)
        self.locators.append(locator)
        self.ncts.append(nct)  # type: ignore[arg-type]
        self.last_updates.append(last_update)
        self.holders.append(holder)
        self.raws.append(canonical)
        self.version_ids.append(content_hash(canonical))
        self.paths.append(record.path)
        self.positions.append(record.position)
        tables, recs = self.tables, self.recs
        for table, table_rows in rows.items():
            if table_rows:
                tables[table].extend(table_rows)
                recs[table].extend([rec] * len(table_rows))

    def drop_invalid_utf8(self) -> None:
        """Turn records whose bytes are not UTF-8 into failures, checking the batch at once.

        The JSON parse skips most of a record's text unchecked, and DuckDB refuses a batch
        holding one bad byte. Arrow checks the whole raw column in one vectorised pass, a
        fraction of decoding every record; records are only looked at one by one when that
        check fails.
        """
        if not len(self.raws):
            return
        try:
            self.raws.arrow().validate(full=True)
            return
        except pa.ArrowInvalid:
            pass
        bad: dict[int, str] = {}
        for index in range(len(self.raws)):
            try:
                self.raws[index].decode("utf-8")
            except UnicodeDecodeError as exc:
                bad[index] = f"not UTF-8 text: {exc}"
        if not bad:  # the column failed for another reason: let the insert say which
            return
        for index, reason in bad.items():
            self.failures.append(
                ImportFailure(self.paths[index], self.positions[index], self.ncts[index], reason)
            )
        keep = [i for i in range(len(self.ncts)) if i not in bad]
        renumber = {old: new for new, old in enumerate(keep)}
        kept_raws = [self.raws[i] for i in keep]
        self.raws.reset()
        for raw in kept_raws:
            self.raws.append(raw)
        for name in (
            "locators", "ncts", "last_updates", "holders", "version_ids", "paths", "positions"
        ):  # fmt: skip
            values = getattr(self, name)
            setattr(self, name, [values[i] for i in keep])
        for table in TABLE_COLUMNS:
            pairs = [
                (row, renumber[rec])
                for row, rec in zip(self.tables[table], self.recs[table], strict=True)
                if rec in renumber
            ]
            self.tables[table] = [row for row, _ in pairs]
            self.recs[table] = [rec for _, rec in pairs]

    def _fail(self, record: RawRecord, nct: str | None, reason: str) -> None:
        nct = nct or record.nct_id  # a reader may know the id of a record it could not read
        self.failures.append(ImportFailure(record.path, record.position, nct, reason))

    def versions(self) -> list[str]:
        """Version id of every stored record (a copy: the store may rewrite entries)."""
        return list(self.version_ids)

    def child_table(
        self, table: str, per_record: dict[str, pa.Array], keep: pa.Array | None
    ) -> pa.Table | None:
        """Arrow table of one normalized table (``None`` when it has no rows).

        ``per_record`` columns (``nct_id``, ``version``, ...) hold one value per record and
        are spread over that record's rows; ``keep`` (one flag per record) drops the rows
        of records that are not stored.
        """
        rows = self.tables[table]
        if not rows:
            return None
        schema = ARROW_SCHEMAS[table]
        rec = pa.array(self.recs[table], pa.int64())
        # One C++ pass over the row tuples (as struct values): a third of the cost of
        # transposing them into per-column lists and converting each column.
        arrays = pa.array(rows, ROW_TYPES[table]).flatten()
        result = pa.Table.from_arrays(
            [per_record["nct_id"].take(rec), per_record["version"].take(rec), *arrays],
            schema=schema,
        )
        for name, values in per_record.items():
            if name not in ("nct_id", "version"):
                result = result.append_column(name, values.take(rec))
        if keep is not None:
            result = result.filter(keep.take(rec))
        return result


def prepare(locator: str, record: RawRecord) -> Batch:
    """A batch of one record (for tests and tools that feed single records)."""
    batch = Batch()
    batch.add(locator, record)
    return batch


class ContentMatcher:
    """Finds a stored (or earlier in the batch) version with the same content as a record.

    Version ids hash a record's compact bytes as written, which costs nothing extra at
    import; but two writers of the same record may differ in escapes (``\\u00e9`` or ``é``),
    key order or number format. Only a study already known by its NCT id can be such a
    twin, so only those are parsed whole and compared as JSON values, in one query per
    batch for all of them (none at all in an import of new studies).
    """

    def __init__(
        self, con: Any, batch: Batch, versions: list[str], known_ids: set[str]
    ) -> None:
        self._con = con
        self._batch = batch
        self._versions = versions
        self._known_ids = set(known_ids)  # the ids stored before this batch
        self._candidates: dict[str, list[tuple[str, Any]]] | None = None

    def _load(self) -> dict[str, list[tuple[str, Any]]]:
        """Stored versions (id, raw text) of the batch's already-stored studies."""
        pending = sorted(self._known_ids & set(self._batch.ncts))
        candidates: dict[str, list[tuple[str, Any]]] = {nct: [] for nct in pending}
        if pending:
            self._con.register("_twin_ids", pa.table({"nct_id": pending}))
            try:
                rows = self._con.execute(
                    "SELECT nct_id, version, raw FROM study_versions "
                    "WHERE nct_id IN (SELECT nct_id FROM _twin_ids) ORDER BY seq"
                ).fetchall()
            finally:
                self._con.unregister("_twin_ids")
            for nct, version, raw in rows:
                candidates[nct].append((version, raw))
        return candidates

    def add(self, index: int) -> None:
        """Record ``index`` of the batch is stored: later records may be its twins."""
        if self._candidates is None:
            self._candidates = self._load()
        nct = self._batch.ncts[index]
        self._candidates.setdefault(nct, []).append((self._versions[index], index))

    def stored_version_with_same_content(self, index: int) -> str | None:
        if self._candidates is None:
            self._candidates = self._load()
        content = orjson.loads(self._batch.raws[index])
        entries = self._candidates.get(self._batch.ncts[index], [])
        for position, (version, raw) in enumerate(entries):
            if not isinstance(raw, dict | list):  # parse each candidate once, when needed
                text = self._batch.raws[raw] if isinstance(raw, int) else raw
                raw = orjson.loads(text)
                entries[position] = (version, raw)
            if raw == content:
                return version
        return None
