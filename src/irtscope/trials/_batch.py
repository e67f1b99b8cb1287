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


#: Why a record nested deeper than the JSON parsers go is skipped (real records: ~10 levels).
NESTED_TOO_DEEPLY = "nested too deeply (over ~1,000 levels, more than the JSON parser allows)"


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
            # msgspec checks UTF-8 in the fields it decodes: word it as the batch check does
            kind = "not UTF-8 text" if "UTF-8" in str(exc) else "invalid JSON"
            self._fail(record, None, f"{kind}: {exc}")
            return
        except UnicodeDecodeError as exc:
            self._fail(record, None, f"not UTF-8 text: {exc}")
            return
        except RecursionError:  # msgspec descends once per level, within Python's limit
            self._fail(record, None, NESTED_TOO_DEEPLY)
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


def load_json(raw: bytes | str) -> Any:
    """Parse one stored record: orjson, or msgspec for what only msgspec reads.

    The import's typed decode (msgspec) skips the fields no table needs, so a record can be
    stored with a number orjson refuses there (``1e999``: orjson rejects infinities); such
    a record must still be readable wherever the whole record is needed (screening,
    comparing versions), or one odd value would stop every later command.
    """
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError:
        return msgspec.json.decode(raw)


class ContentMatcher:
    """Decides, by content, the records of a batch whose study is known but whose bytes are not.

    Version ids hash a record's compact bytes as written, which costs nothing extra at
    import; but two writers of the same record may differ in escapes (``\\u00e9`` or ``é``),
    key order or number format. Only a study already known by its NCT id (stored, or earlier
    in the batch) can be such a twin, so only those are parsed whole and compared as JSON
    values with every stored version of that study and its earlier versions in the batch.

    Memory stays bounded whatever the overlap with the store: stored versions are fetched
    for :attr:`CHUNK` studies at a time, unsorted (ordering by ``seq`` in SQL made DuckDB
    sort every candidate's raw JSON at once, which ran out of memory at the import cap as
    soon as a batch re-imported a few thousand known studies in other bytes), and parsed
    values are kept only while their study is being decided (all of a batch's candidates,
    parsed, came to ten times the batch's bytes).
    """

    #: studies whose stored versions one query fetches (a few MB of raw JSON)
    CHUNK = 128

    def __init__(self, con: Any, batch: Batch, versions: list[str]) -> None:
        self._con = con
        self._batch = batch
        self._versions = versions  # rewritten in place: a twin takes its match's version id

    def resolve(
        self, deferred: dict[str, list[int]], seeds: dict[str, int], outcomes: list[str]
    ) -> None:
        """Fill ``outcomes[i]`` (``identical`` or ``other_version``) for every deferred record.

        ``deferred`` maps an NCT id to the indices (in batch order) still to decide;
        ``seeds`` maps the NCT ids not stored before the batch to the index of their first
        record in it (their only candidate to start with).
        """
        ncts = sorted(deferred)
        for start in range(0, len(ncts), self.CHUNK):
            chunk = ncts[start : start + self.CHUNK]
            stored = self._stored([nct for nct in chunk if nct not in seeds])
            for nct in chunk:
                rows = sorted(stored.pop(nct, ()))  # by seq: oldest version first
                candidates: list[tuple[str, bytes | str | int]] = [(v, raw) for _, v, raw in rows]
                if nct in seeds:
                    candidates.append((self._versions[seeds[nct]], seeds[nct]))
                self._settle(deferred[nct], candidates, outcomes)

    def _stored(self, ncts: list[str]) -> dict[str, list[tuple[int, str, str]]]:
        """``(seq, version, raw)`` of every stored version of these studies (sorted ids)."""
        found: dict[str, list[tuple[int, str, str]]] = {}
        if not ncts:
            return found
        self._con.register("_twin_ids", pa.table({"nct_id": ncts}))
        try:
            rows = self._con.execute(
                "SELECT v.nct_id, v.seq, v.version, v.raw FROM study_versions v "
                "SEMI JOIN _twin_ids t ON v.nct_id = t.nct_id WHERE v.nct_id BETWEEN ? AND ?",
                [ncts[0], ncts[-1]],
            ).fetchall()
        finally:
            self._con.unregister("_twin_ids")
        for nct, seq, version, raw in rows:
            found.setdefault(nct, []).append((seq or 0, version, raw))
        return found

    def _settle(
        self,
        indices: list[int],
        candidates: list[tuple[str, bytes | str | int]],
        outcomes: list[str],
    ) -> None:
        """One study's deferred records, in order; a kept one is a candidate for the next."""
        raws, versions = self._batch.raws, self._versions
        known = {version for version, _ in candidates}
        equal_to: dict[str, str] = {}  # bytes already found equal to a candidate -> its id
        parsed: list[Any] = [None] * len(candidates)
        for i in indices:
            version = versions[i]
            if version in known:
                outcomes[i] = "identical"
                continue
            if version in equal_to:
                versions[i] = equal_to[version]
                outcomes[i] = "identical"
                continue
            content = load_json(raws[i])
            match = None
            for position, (candidate, raw) in enumerate(candidates):
                if parsed[position] is None:  # parse each candidate once, when needed
                    parsed[position] = load_json(raws[raw] if isinstance(raw, int) else raw)
                if parsed[position] == content:
                    match = candidate
                    break
            if match is not None:
                equal_to[version] = versions[i] = match
                outcomes[i] = "identical"
                continue
            outcomes[i] = "other_version"
            candidates.append((version, i))
            parsed.append(content)
            known.add(version)
