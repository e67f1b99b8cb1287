"""Archived registry records for the offline demo: where they are, what is used, the banner.

When ClinicalTrials.gov cannot be reached, ``irtscope trials demo`` still shows a landscape
of real trials, built from registry records saved earlier (the project's
``../shared/data/ctgov``: API v2 JSON exports and the 2020 legacy-XML dump). Such a report is
not a search of today's registry, so it says so at the top, with the data date of every file
it was built from.

Which records: every API v2 file at the top of the archive and every folder of legacy XML.
Off-topic collections cost screening time but cannot distort the landscape (screening
excludes them and the flow diagram counts them), and a trial found in several files is one
study in the store, counted once at its newest version; so nothing is hand-picked.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

#: Environment variable naming the archive folder (empty or missing folder: no archive).
ARCHIVE_ENV = "IRTSCOPE_ARCHIVE"
#: Where the archive sits relative to the working directory or the repository root.
ARCHIVE_RELATIVE = Path("..") / "shared" / "data" / "ctgov"
ARCHIVE_BANNER = "Archived registry records, not a live search"
_RECORD_SUFFIXES = (".json.gz", ".json", ".jsonl", ".jsonl.gz", ".zip", ".csv")


def find_archive(cwd: Path | None = None) -> Path | None:
    """The archive folder: ``$IRTSCOPE_ARCHIVE``, else ``../shared/data/ctgov`` next to the
    working directory or to this checkout; ``None`` when there is none.

    An explicit ``IRTSCOPE_ARCHIVE`` wins even when it names nothing (then there is no
    archive), so a user or a test can switch the fallback off.
    """
    if (env := os.environ.get(ARCHIVE_ENV)) is not None:
        path = Path(env).expanduser()
        return path.resolve() if env.strip() and _has_records(path) else None
    repo_root = Path(__file__).resolve().parents[3]
    for base in (cwd or Path.cwd(), repo_root):
        candidate = base / ARCHIVE_RELATIVE
        if _has_records(candidate):
            return candidate.resolve()
    return None


def archive_sources(root: Path) -> list[Path]:
    """Folders of legacy XML under ``root``, then its record files, each group sorted.

    Legacy XML first: that format ended in 2024, so its records are the older ones and the
    snapshots then follow the registry's own time order as far as it is known.
    """
    if not root.is_dir():
        return []
    entries = sorted(root.iterdir())
    files = [p for p in entries if p.is_file() and p.name.lower().endswith(_RECORD_SUFFIXES)]
    folders = [p for p in entries if p.is_dir() and next(p.rglob("*.xml"), None) is not None]
    return folders + files


def _has_records(path: Path) -> bool:
    return bool(archive_sources(path))


def archive_banner(store: Any, root: Path) -> str:
    """The report's banner: what the records are, and the data date of each source file.

    The dates are the snapshots' registry data timestamps (for an API v2 file its newest
    record export date, for legacy XML the dump's download date).
    """
    rows = store.con.execute(
        "SELECT source, data_timestamp FROM snapshots WHERE status = 'complete' "
        "ORDER BY snapshot_id"
    ).fetchall()
    parts = [
        f"{Path(str(source)).name} (data of {stamp or 'unknown date'})" for source, stamp in rows
    ]
    return (
        f"{ARCHIVE_BANNER}. ClinicalTrials.gov could not be reached, so this landscape was "
        f"built from registry records archived in {root}: {'; '.join(parts)}. A trial found "
        "in several files is counted once, at its newest version; the counts describe these "
        "files, not today's registry."
    )


__all__ = [
    "ARCHIVE_BANNER",
    "ARCHIVE_ENV",
    "archive_banner",
    "archive_sources",
    "find_archive",
]
