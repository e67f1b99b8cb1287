"""The store "as of" a snapshot: the landscape as it was when that snapshot was taken.

The store keeps every version of every study with the snapshot that first stored it, and an
``entries`` row for every record each snapshot read (a re-read identical record points at the
version already stored). The view *as of snapshot S* is, per NCT id, the newest version among
the versions read by snapshots ``<= S`` (by snapshot id, i.e. import order), newest decided
exactly as ``is_current`` decides it (last update posted, then the registry's version stamp,
then order of arrival). As of the latest snapshot this is the store's current view; as of an
older one it is what that older import (with everything before it) held, so screening it
reproduces the screening of the older data imported alone.

Snapshots are cumulative on purpose: a registry dump unpacked into a folder is imported as one
snapshot per file, and a harvest may return only some of a landscape's trials; "as of" the last
of those snapshots still means every trial known by then.

Everything here only reads the store (no table or column is added), so it works on any store
file and beside the import code, which it does not touch.
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Iterator
from typing import Any

import orjson
import pandas as pd

from irtscope._errors import DataError
from irtscope.trials._normalize import TABLE_COLUMNS

__all__ = [
    "SNAPSHOT_COLUMNS",
    "StoreAsOf",
    "as_of_rows",
    "iter_studies_as_of",
    "list_snapshots",
    "resolve_snapshot",
    "snapshot_row",
]

#: Columns of :func:`list_snapshots` (one row per snapshot, oldest first).
SNAPSHOT_COLUMNS = (
    "snapshot_id",  # int, import order
    "kind",  # "file" or "api"
    "source",  # file path or API base URL
    "retrieved_at",  # when irtscope read it (UTC, ISO text)
    "data_timestamp",  # registry data version (harvest) or newest record export date (file)
    "data_date",  # the date "as of DATE" compares: data_timestamp's date, else retrieved_at's
    "status",  # complete / in_progress
    "entries",  # records read (duplicates included)
    "studies",  # distinct NCT ids read
    "new_studies",  # NCT ids this snapshot stored first
    "new_versions",  # versions this snapshot stored first (new studies included)
)

_DATE = re.compile(r"^\d{4}-\d{2}-\d{2}$")

#: Per NCT id, the version current as of snapshot ``$1`` (see the module docstring).
#: Versions read by a snapshot <= S: the one that stored them, or any that read them again.
_AS_OF_VERSIONS = """
WITH seen AS (
    SELECT nct_id, version FROM study_versions WHERE snapshot_id <= $1
    UNION
    SELECT nct_id, version FROM entries
    WHERE snapshot_id <= $1 AND nct_id IS NOT NULL AND version IS NOT NULL
), ranked AS (
    SELECT v.nct_id, v.version, v.merged_into, row_number() OVER (
        PARTITION BY v.nct_id ORDER BY v.last_update_posted DESC NULLS LAST,
        v.version_holder DESC NULLS LAST, v.seq DESC) AS rn
    FROM study_versions v SEMI JOIN seen s ON v.nct_id = s.nct_id AND v.version = s.version
)
SELECT nct_id, version FROM ranked
WHERE rn = 1 AND (merged_into IS NULL OR merged_into NOT IN (SELECT nct_id FROM seen))
"""


def _iso(value: Any) -> str | None:
    if value is None:
        return None
    return value.isoformat() if hasattr(value, "isoformat") else str(value)


def _data_date(data_timestamp: Any, retrieved_at: Any) -> str | None:
    """``YYYY-MM-DD`` the data stands for: the registry stamp, else the retrieval day."""
    if isinstance(data_timestamp, str) and len(data_timestamp) >= 10:
        head = data_timestamp[:10]
        if _DATE.match(head):
            return head
    text = _iso(retrieved_at)
    return text[:10] if text else None


def list_snapshots(store: Any) -> pd.DataFrame:
    """Every snapshot with its counts, oldest first (columns :data:`SNAPSHOT_COLUMNS`).

    Why counts per snapshot: a user choosing ``--since``/``--as-of`` needs to see which import
    held what (a folder of files is one snapshot per file).
    """
    con = store.con
    rows = con.execute(
        """SELECT s.snapshot_id, s.kind, s.source, s.retrieved_at, s.data_timestamp, s.status,
                  coalesce(e.n, 0), coalesce(e.studies, 0), coalesce(f.n, 0),
                  coalesce(v.n, 0)
           FROM snapshots s
           LEFT JOIN (SELECT snapshot_id, count(*) AS n, count(DISTINCT nct_id) AS studies
                      FROM entries GROUP BY ALL) e USING (snapshot_id)
           LEFT JOIN (SELECT first, count(*) AS n FROM (SELECT nct_id, min(snapshot_id) AS first
                      FROM study_versions GROUP BY ALL) GROUP BY ALL) f
                  ON f.first = s.snapshot_id
           LEFT JOIN (SELECT snapshot_id, count(*) AS n FROM study_versions GROUP BY ALL) v
                  USING (snapshot_id)
           ORDER BY s.snapshot_id"""
    ).fetchall()
    records = [
        {
            "snapshot_id": int(r[0]),
            "kind": r[1],
            "source": r[2],
            "retrieved_at": _iso(r[3]),
            "data_timestamp": r[4],
            "data_date": _data_date(r[4], r[3]),
            "status": r[5],
            "entries": int(r[6]),
            "studies": int(r[7]),
            "new_studies": int(r[8]),
            "new_versions": int(r[9]),
        }
        for r in rows
    ]
    return pd.DataFrame(records, columns=list(SNAPSHOT_COLUMNS))


def resolve_snapshot(store: Any, ref: int | str | None, *, before: int | None = None) -> int:
    """The snapshot id a user reference names.

    Parameters
    ----------
    ref
        A snapshot id (``3`` or ``"3"``), a date ``YYYY-MM-DD`` (the latest snapshot whose
        data date is on or before it: "the landscape as it was on that day"), or ``None``:
        the latest snapshot, or with ``before`` the latest one older than ``before``.

    Raises
    ------
    DataError
        No such snapshot, a date before every snapshot, or text that is neither.
    """
    snaps = list_snapshots(store)
    if snaps.empty:
        raise DataError("the trials database holds no snapshot: import or fetch records first")
    ids = [int(i) for i in snaps["snapshot_id"]]
    if ref is None or (isinstance(ref, str) and not ref.strip()):
        candidates = [i for i in ids if before is None or i < before]
        if not candidates:
            raise DataError(
                f"no snapshot before snapshot {before} to compare with "
                f"(the store holds {len(ids)}: {', '.join(map(str, ids))})"
            )
        return candidates[-1]
    text = str(ref).strip()
    if text.isdigit():
        if int(text) not in ids:
            raise DataError(f"no snapshot {text}; snapshots: {', '.join(map(str, ids))}")
        return int(text)
    if _DATE.match(text):
        try:
            dt.date.fromisoformat(text)
        except ValueError as exc:
            raise DataError(f"not a date: {text!r}") from exc
        dated = [
            int(i)
            for i, day in zip(snaps["snapshot_id"], snaps["data_date"], strict=True)
            if day is not None and day <= text
        ]
        if not dated:
            first = (
                min(d for d in snaps["data_date"] if d) if snaps["data_date"].notna().any() else "?"
            )
            raise DataError(f"no snapshot dated on or before {text} (the oldest is {first})")
        return max(dated)
    raise DataError(f"{text!r} is neither a snapshot id nor a date (YYYY-MM-DD)")


def snapshot_row(store: Any, snapshot_id: int) -> dict[str, Any]:
    """One row of :func:`list_snapshots` as a dict (labels, report headers)."""
    snaps = list_snapshots(store)
    row = snaps[snaps["snapshot_id"] == snapshot_id]
    if row.empty:
        raise DataError(f"no snapshot {snapshot_id}")
    return {k: (None if pd.isna(v) else v) for k, v in row.iloc[0].to_dict().items()}


def _cursor(store: Any) -> Any:
    """A cursor on the store's file (a cursor is a new connection: point it at the file)."""
    cursor = store.con.cursor()
    if getattr(store, "_attached", False):
        from irtscope.trials._duckdb import ALIAS

        cursor.execute(f"USE {ALIAS}")
    return cursor


def iter_studies_as_of(
    store: Any, snapshot_id: int, batch_size: int = 500
) -> Iterator[dict[str, Any]]:
    """Raw API v2 JSON of every study as of ``snapshot_id``, by NCT id (see module docs)."""
    cursor = _cursor(store)
    try:
        cursor.execute(
            f"WITH as_of AS ({_AS_OF_VERSIONS}) SELECT v.raw FROM study_versions v "
            "SEMI JOIN as_of a ON v.nct_id = a.nct_id AND v.version = a.version "
            "ORDER BY v.nct_id",
            [int(snapshot_id)],
        )
        while True:
            rows = cursor.fetchmany(batch_size)
            if not rows:
                break
            for (raw,) in rows:
                yield orjson.loads(raw)
    finally:
        cursor.close()


def as_of_rows(store: Any, snapshot_id: int, table: str = "studies") -> pd.DataFrame:
    """Normalised rows of ``table`` for the versions current as of ``snapshot_id``.

    The SQL twin of :func:`iter_studies_as_of`, for counts and joins without parsing JSON.
    """
    if table not in TABLE_COLUMNS:
        raise DataError(f"no normalised table {table!r}; tables: {', '.join(TABLE_COLUMNS)}")
    return store.con.execute(
        f"WITH as_of AS ({_AS_OF_VERSIONS}) SELECT t.* FROM {table} t "
        "SEMI JOIN as_of a ON t.nct_id = a.nct_id AND t.version = a.version "
        "ORDER BY t.nct_id",
        [int(snapshot_id)],
    ).df()


class StoreAsOf:
    """A read-only stand-in for a :class:`Store` that shows it as of one snapshot.

    It has what screening and the report read from a store (``iter_studies``,
    ``hit_summary``, ``snapshot_info``, ``study_count``), so ``screen``, ``classify`` and
    ``report`` rebuild the landscape as it was then without a code path of their own. It has
    no ``con``: nothing is recorded into the store from a view of its past.
    """

    def __init__(self, store: Any, snapshot_id: int) -> None:
        self.store = store
        self.snapshot_id = int(snapshot_id)

    def iter_studies(self, batch_size: int = 500) -> Iterator[dict[str, Any]]:
        return iter_studies_as_of(self.store, self.snapshot_id, batch_size)

    def study_count(self) -> int:
        row = self.store.con.execute(
            f"SELECT count(*) FROM ({_AS_OF_VERSIONS})", [self.snapshot_id]
        ).fetchone()
        return int(row[0])

    def hit_summary(self) -> dict[str, Any]:
        """Hits read by the snapshots up to this one (duplicates included)."""
        row = self.store.con.execute(
            "SELECT count(*) FROM entries WHERE snapshot_id <= ?", [self.snapshot_id]
        ).fetchone()
        return {"entries_read": int(row[0]), "unique_studies": self.study_count()}

    def snapshot_info(self) -> dict[str, Any]:
        row = snapshot_row(self.store, self.snapshot_id)
        return {
            "snapshot_id": self.snapshot_id,
            "kind": row["kind"],
            "source": row["source"],
            "retrieved_at": row["retrieved_at"],
            "data_timestamp": row["data_timestamp"],
            "status": row["status"],
            "as_of": f"snapshot {self.snapshot_id}",
        }
