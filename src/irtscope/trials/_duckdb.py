"""How the store uses DuckDB: the attached file, and the settings of a bulk import.

Measured choices live here, each with its reason (see ``benchmarks/ingest.py``).
"""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Any

#: Rows per row group of the database file (DuckDB's default is 122,880; see ``attach``).
ROW_GROUP_SIZE = 2048
#: The name the store file is attached under.
ALIAS = "trials_store"
#: DuckDB memory cap during bulk imports (see ``BulkMode``): 256 MB was no faster, and
#: peak memory then kept rising for the first 100,000 records while DuckDB filled its cache.
BULK_MEMORY_LIMIT = "128MB"


class BulkMode:
    """How one import writes: full batches straight to the file, checkpoints on our terms.

    A full batch fills row groups, which DuckDB writes to the file at commit (see
    :func:`attach`); only the few rows left over in child tables go to the write-ahead log.
    DuckDB's automatic checkpoints are held off (they fire on log size, mid-import, and
    cost more than the batch they follow); instead the import checkpoints every few full
    batches (:meth:`after_batch`) and makes the commit of its last, partial batch checkpoint
    directly (:meth:`last_batch`) rather than logging ~20 kB per record first and copying it
    again at the end. DuckDB's memory is capped, so its cache of blocks just written stays
    small: peak memory levels off within the first ~20,000 records however large the input.
    """

    _NAMES = ("memory_limit", "checkpoint_threshold")
    CHECKPOINT_EVERY = 8

    def __init__(self, con: Any | None) -> None:
        self._con = con
        self._batches = 0
        self._previous: dict[str, str] = {}
        if con is None:
            return  # an in-memory store: nothing to checkpoint, nowhere to spill
        for name in self._NAMES:
            self._previous[name] = first_row(con.execute("SELECT current_setting(?)", [name]))[0]
        con.execute(f"SET memory_limit = '{BULK_MEMORY_LIMIT}'")
        con.execute("SET checkpoint_threshold = '1TB'")

    def after_batch(self) -> None:
        """Checkpoint every :attr:`CHECKPOINT_EVERY` full batches.

        Full row groups went to the file at commit; what a checkpoint still has to write is
        the few rows per child table that did not fill one. Left alone, those accumulate
        in memory (uncompressed) with every batch, and each commit grew slower; folding
        them in now and then keeps memory and commit time flat, at ~40 ms per checkpoint.
        """
        if self._con is None:
            return
        self._batches += 1
        if self._batches % self.CHECKPOINT_EVERY == 0:
            self._con.execute("CHECKPOINT")

    def last_batch(self) -> None:
        """Make the next commit (the last, partial batch) checkpoint at once.

        The threshold is 0 rather than DuckDB's default: DuckDB compares it with its own
        estimate of the log, which is far below the bytes a batch of raw JSON commits.
        """
        if self._con is not None:
            self._con.execute("SET checkpoint_threshold = '0B'")

    def finish(self) -> None:
        """Checkpoint what is left and restore every setting."""
        if self._con is None:
            return
        try:
            self._con.execute("CHECKPOINT")
        finally:
            for name in self._NAMES:
                self._set(name)

    def _set(self, name: str) -> None:
        self._con.execute(f"SET {name} = '{self._previous[name]}'")  # type: ignore[union-attr]


def attach(duckdb: Any, path: Path, read_only: bool) -> Any:
    """Connection whose default database is the store file, attached with small row groups.

    DuckDB writes a transaction's rows straight into the database file, compressed, once
    they fill a row group; smaller transactions go through the write-ahead log and are
    compressed again at the next checkpoint, so every raw record (~20 kB of JSON) was written
    three times (log, spill, file). With 2,048-row groups, one import batch fills them and
    goes straight to the file: imports run about twice as fast, and the file is about half
    again as large. Row group size is an ``ATTACH`` option (not a setting, nor stored in the
    file), which is why the store is attached to an in-memory connection rather than opened
    directly; files written either way read the same.
    """
    con = duckdb.connect(":memory:")
    try:
        options = f"ROW_GROUP_SIZE {ROW_GROUP_SIZE}" + (", READ_ONLY" if read_only else "")
        quoted = str(path).replace("'", "''")
        con.execute(f"ATTACH '{quoted}' AS {ALIAS} ({options})")
        con.execute(f"USE {ALIAS}")
        if not read_only:
            remove_stale_spill(Path(f"{path}.tmp"))
        # An in-memory main database would spill to ./.tmp: keep spill files by the store.
        con.execute("SET temp_directory = ?", [f"{path}.tmp"])
    except BaseException:
        con.close()
        raise
    return con


def remove_stale_spill(folder: Path) -> None:
    """Remove the spill folder a killed import left by the store (``<store>.tmp``).

    DuckDB removes it on a clean close; a killed process leaves it, usually empty. Only a
    connection that just attached the store for writing calls this: it holds the file's
    lock, so no other process can be spilling there. DuckDB's own files
    (``duckdb_temp_*``) go; anything else, and the folder with it, is left alone.
    """
    if not folder.is_dir():
        return
    for entry in folder.glob("duckdb_temp*"):
        if entry.is_file():
            entry.unlink(missing_ok=True)
    with contextlib.suppress(OSError):  # not empty: someone else's files stay
        folder.rmdir()


def first_row(result: Any) -> Any:
    """First row of a result, consuming it (DuckDB wants every result fetched to the end)."""
    rows = result.fetchall()
    return rows[0] if rows else None
