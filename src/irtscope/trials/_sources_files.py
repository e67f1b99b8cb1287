"""Streaming readers for registry files, and :func:`import_paths` which feeds them to a store.

Accepted layouts (each optionally gzip-compressed, detected by magic bytes, not by name):

* API v2 JSON as a list of studies (``[{...}, ...]``; loaded whole, since a JSON list cannot
  be split safely without a streaming parser, so prefer the layouts below for huge inputs);
* API v2 pages ``{"studies": [...], "nextPageToken": ...}``, one per file or one per line;
* JSONL, one study per line (streamed line by line: memory stays flat whatever the size);
* the registry's bulk download zip (``ctg-studies.json.zip``: one JSON file per study,
  streamed member by member);
* the registry's CSV download (see :mod:`._sources_csv`);
* the registry's legacy ``<clinical_study>`` XML: one file per study, alone, in a folder or
  in the AllPublicXML zip (see :mod:`._sources_xml`; converted to API v2 JSON).

Readers never raise on a bad record: they yield a :class:`RawRecord` carrying the error, so
one malformed line is reported (file, position, reason) and the rest is imported.
"""

from __future__ import annotations

import gzip
import io
import itertools
import logging
import zipfile
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, TypedDict

import msgspec
import orjson

from irtscope._errors import DataError
from irtscope.trials._duckdb import ROW_GROUP_SIZE
from irtscope.trials._json_scan import split_nested

logger = logging.getLogger(__name__)

ProgressCallback = Callable[[int, "int | None", str], None]

#: Records handed to the store per batch; bounds memory for streamed inputs. One batch fills
#: one row group of the store file, which DuckDB then writes straight to the file instead of
#: through its write-ahead log.
DEFAULT_BATCH_SIZE = ROW_GROUP_SIZE
#: Read buffer: records are ~20 kB lines, so the default 8 kB buffer splits every line
#: over several reads and joins the pieces again.
_READ_BUFFER = 1 << 20


@dataclass(frozen=True)
class RawRecord:
    """One entry read from a file: its JSON bytes (``raw``), a study dict (sources that build
    one, like CSV), or the reason it could not be read.

    Readers of JSON pass bytes on unparsed: the store parses each record once, and only the
    parts it indexes (see :func:`irtscope.trials._record_schema.fast_rows`).
    """

    path: str
    position: str
    study: dict[str, Any] | None = None
    error: str | None = None
    raw: bytes | None = None
    #: NCT id of an error entry, when the reader saw it before the error (legacy XML)
    nct_id: str | None = None

    def load(self) -> Any:
        """The whole record as Python objects (``None`` for an error entry).

        Raises
        ------
        DataError
            When ``raw`` is not well-formed JSON (naming the file and position).
        """
        if self.study is not None or self.raw is None:
            return self.study
        try:
            return orjson.loads(self.raw)
        except orjson.JSONDecodeError as exc:
            raise DataError(f"{self.path}, {self.position}: invalid JSON: {exc}") from exc


@dataclass
class ImportFailure:
    """A record or file that was skipped, with where it was and why."""

    path: str
    position: str | None
    nct_id: str | None
    reason: str

    def __str__(self) -> str:
        where = self.path + (f" [{self.position}]" if self.position else "")
        who = f" {self.nct_id}" if self.nct_id else ""
        return f"{where}{who}: {self.reason}"


@dataclass
class ImportReport:
    """What an import did. ``duplicates`` = entries read that did not add a new study."""

    entries_read: int = 0
    new_studies: int = 0
    new_versions: int = 0
    identical: int = 0
    older_versions: int = 0
    alias_merged: int = 0
    already_imported: int = 0
    files: int = 0
    failures: list[ImportFailure] = field(default_factory=list)
    table_counts: dict[str, int] = field(default_factory=dict)
    #: versions of one study with the same last update and export dates (imported; the
    #: current one is chosen by version id, see README "Trial records")
    conflicts: list[ImportFailure] = field(default_factory=list)

    @property
    def duplicates(self) -> int:
        """Entries that were not a new study: seen before (same or another version/alias)."""
        return self.entries_read - self.new_studies

    @property
    def ok(self) -> bool:
        return not self.failures

    def merge(self, other: ImportReport) -> None:
        for name in (
            "entries_read",
            "new_studies",
            "new_versions",
            "identical",
            "older_versions",
            "alias_merged",
            "already_imported",
            "files",
        ):
            setattr(self, name, getattr(self, name) + getattr(other, name))
        self.failures.extend(other.failures)
        self.conflicts.extend(other.conflicts)


def _open_binary(path: Path) -> IO[bytes]:
    """Open a file, transparently un-gzipping it (by magic bytes)."""
    with path.open("rb") as probe:
        head = probe.read(2)
    if head == b"\x1f\x8b":
        # BufferedReader gives peek(); gzip.open owns (and closes) the file.
        return io.BufferedReader(gzip.open(path, "rb"), buffer_size=_READ_BUFFER)  # type: ignore[arg-type]
    return path.open("rb", buffering=_READ_BUFFER)


_RAW_LIST = msgspec.json.Decoder(list[msgspec.Raw])


class _Envelope(TypedDict, total=False):
    studies: list[msgspec.Raw]


_ENVELOPE = msgspec.json.Decoder(_Envelope)
#: The registry writes ``protocolSection`` first: such a value is a study, not a page, and
#: needs no envelope check (a malformed one is reported when the store parses it).
_STUDY_START = b'{"protocolSection"'


def _split_value(data: bytes, path: str, where: str) -> Iterator[RawRecord]:
    """One JSON value (a whole file or one line) -> its study records, still as bytes.

    Lists and ``{"studies": [...]}`` pages are split into their items without parsing the
    items (``msgspec.Raw`` only finds where each one ends); the store parses each study
    once. ``where`` locates the value ("line 7" in JSONL, "" for a whole file); positions
    read like ``line 7``, ``item 12`` or ``line 3 studies[4]``.
    """
    prefix = f"{where} " if where else ""
    head = data[:1] if data[:1] in (b"[", b"{") else data.lstrip()[:1]
    if head == b"{" and data.startswith(_STUDY_START):
        yield RawRecord(path, where or "item 0", raw=data)
        return
    try:
        if head == b"[":
            items: list[msgspec.Raw] | None = _RAW_LIST.decode(data)
            label = "item"
        elif head == b"{":
            try:
                items = _ENVELOPE.decode(data).get("studies")
            except msgspec.ValidationError:  # "studies" that is not a list: not a page
                items = None
            label = "studies"
        else:
            value = msgspec.json.decode(data)
            yield RawRecord(
                path,
                where or "file",
                error=f"expected a JSON object or list, got {type(value).__name__}",
            )
            return
    except msgspec.DecodeError as exc:
        yield RawRecord(path, where or "file", error=f"invalid JSON: {exc}")
        return
    except RecursionError:  # an item nested too deeply: split by brackets, so only it fails
        label, items = split_nested(data)
    if items is None:
        yield RawRecord(path, where or "item 0", raw=data)
        return
    for i, item in enumerate(items):
        position = f"{prefix}item {i}" if label == "item" else f"{prefix}studies[{i}]"
        yield RawRecord(path, position, raw=bytes(item))


#: Lines read to tell JSONL (with damaged first lines) from one indented JSON value.
_JSONL_PROBE = 16


def _whole_value(line: bytes) -> bool:
    """Whether ``line`` is one complete JSON value (too deep to check counts as one: an
    indented document never nests a thousand levels on one line)."""
    try:
        msgspec.json.decode(line, type=msgspec.Raw)
    except msgspec.DecodeError:
        return False
    except RecursionError:
        return True
    return True


def _whole_object(line: bytes) -> bool:
    """A JSONL record line: a whole object starting at column 0."""
    return line[:1] == b"{" and _whole_value(line)


def _iter_json_stream(stream: IO[bytes], path: str) -> Iterator[RawRecord]:
    """JSON list / page / study / JSONL from an (uncompressed) byte stream."""
    buffered = io.BufferedReader(stream) if not hasattr(stream, "peek") else stream
    head = buffered.peek(64)[:64].lstrip()  # type: ignore[union-attr]
    if not head:
        yield RawRecord(path, "file", error="empty file")
        return
    if head[:1] not in (b"[", b"{"):
        yield RawRecord(
            path,
            "file",
            error=f"not API v2 JSON (a list or object) nor a registry CSV (header 'NCT Number,"
            f"...'): starts with {bytes(head[:16])!r}",
        )
        return
    if head[:1] == b"[":
        yield from _split_value(buffered.read(), path, "")
        return
    # '{' : JSONL (studies or pages, one per line) or one pretty-printed object.
    # JSONL shows itself within a few lines, as a line that is a whole object (a damaged
    # first record must not turn the file into one invalid document); indented JSON never.
    lines = [buffered.readline()]
    while not (_whole_value(lines[0]) if len(lines) == 1 else _whole_object(lines[-1])):
        if len(lines) == _JSONL_PROBE or not lines[-1]:
            yield from _split_value(b"".join(lines) + buffered.read(), path, "")
            return
        lines.append(buffered.readline())
    for lineno, line in enumerate(itertools.chain(lines, buffered), start=1):
        if line.isspace():  # blank line (isspace stops at the first non-blank: no copy)
            continue
        yield from _split_value(line, path, f"line {lineno}")


def _iter_zip(path: Path) -> Iterator[RawRecord]:
    try:
        archive = zipfile.ZipFile(path)
    except zipfile.BadZipFile as exc:
        yield RawRecord(str(path), "file", error=f"bad zip file: {exc}")
        return
    from irtscope.trials._sources_xml import iter_xml_stream, looks_like_xml

    with archive:
        for info in archive.infolist():
            if info.is_dir():
                continue
            member = f"{path}!{info.filename}"
            if info.filename.rsplit("/", 1)[-1] == "Contents.txt":
                continue  # the AllPublicXML zip's index of its members, not a record
            try:
                with archive.open(info) as handle:
                    if info.filename.lower().endswith(".xml") or looks_like_xml(handle.peek(64)):
                        yield from iter_xml_stream(handle, member)
                    elif info.filename.lower().endswith(".csv"):
                        from irtscope.trials._sources_csv import iter_csv_records

                        yield from iter_csv_records(
                            io.TextIOWrapper(handle, encoding="utf-8-sig", newline=""), member
                        )
                    else:
                        inner = (
                            gzip.GzipFile(fileobj=handle)
                            if info.filename.endswith(".gz")
                            else handle
                        )
                        yield from _iter_json_stream(inner, member)  # type: ignore[arg-type]
            except (OSError, zipfile.BadZipFile, EOFError) as exc:
                yield RawRecord(member, "file", error=f"unreadable member: {exc}")


def _looks_like_csv(head: bytes, name: str) -> bool:
    """A registry CSV: by its header, or a ``.csv`` name on anything that is not JSON.

    A ``.csv`` file with another header goes to the CSV reader too, which then says which
    registry columns are missing (rather than "invalid JSON" about a file that never was).
    """
    head = head.lstrip(b"\xef\xbb\xbf")
    first = head.split(b"\n", 1)[0]
    if head.startswith(b"NCT Number") or (b"NCT Number" in first and b"," in first):
        return True
    return first.lstrip()[:1] not in (b"[", b"{") and name.lower().removesuffix(".gz").endswith(
        ".csv"
    )


def iter_file(path: str | Path) -> Iterator[RawRecord]:
    """Every entry of one file, in order, errors included (never raises on bad content).

    Raises
    ------
    DataError
        When the file does not exist (the caller asked for something that is not there).
    """
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: no such file")
    if zipfile.is_zipfile(path):
        yield from _iter_zip(path)
        return
    from irtscope.trials._sources_xml import iter_xml_stream, looks_like_xml

    try:
        stream = _open_binary(path)
        with stream:
            head = stream.peek(64)[:64] if hasattr(stream, "peek") else b""
            if looks_like_xml(head):
                yield from iter_xml_stream(stream, str(path))
            elif _looks_like_csv(head, path.name):
                from irtscope.trials._sources_csv import iter_csv_records

                text = io.TextIOWrapper(stream, encoding="utf-8-sig", newline="")
                yield from iter_csv_records(text, str(path))
            else:
                yield from _iter_json_stream(stream, str(path))
    except (OSError, EOFError, gzip.BadGzipFile) as exc:
        yield RawRecord(str(path), "file", error=f"unreadable file (truncated or corrupt?): {exc}")
    except UnicodeDecodeError as exc:
        yield RawRecord(str(path), "file", error=f"not UTF-8 text: {exc}")


def _iter_files(paths: Iterable[Path]) -> Iterator[RawRecord]:
    """The entries of several files, one after the other (a folder of legacy XML)."""
    for path in paths:
        yield from iter_file(path)


def iter_batches(records: Iterable[RawRecord], size: int) -> Iterator[list[RawRecord]]:
    batch: list[RawRecord] = []
    for record in records:
        batch.append(record)
        if len(batch) >= size:
            yield batch
            batch = []
    if batch:
        yield batch


def import_paths(
    store: Any,
    paths: Iterable[str | Path],
    progress: ProgressCallback | None = None,
    batch_size: int = DEFAULT_BATCH_SIZE,
) -> ImportReport:
    """Import registry files into ``store``; one transaction per file.

    Parameters
    ----------
    store : Store
        Open :class:`irtscope.trials.Store`.
    paths : iterable of path
        Files in any accepted layout (see module docstring), or folders of them. Missing
        files are reported as failures, not raised, so one typo does not lose a long import.
    progress : callable, optional
        ``progress(advance, total, description)``, called after every batch.
    batch_size : int
        Records per insert batch (bounds memory for streamed layouts).

    Returns
    -------
    ImportReport
        Counts (entries read, new studies, new versions, duplicates) and the failures
        (file, position, NCT id, reason). Re-importing the same data adds nothing.
    """
    report = ImportReport()
    expanded: list[Path] = []
    xml_folders: dict[Path, list[Path]] = {}
    for path in map(Path, paths):
        # A folder (e.g. an unpacked bulk download) stands for the files under it.
        files = sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
        if not files:
            report.failures.append(
                ImportFailure(str(path), None, None, "folder holds no files to import")
            )
        if path.is_dir() and (xml := [p for p in files if p.suffix.lower() == ".xml"]):
            # Legacy XML holds one study per file (unpacked AllPublicXML: ~500,000 files):
            # the folder's XML files are one snapshot, as the zip they came in would be.
            xml_folders[path] = xml
            files = [path] + [p for p in files if p.suffix.lower() != ".xml"]
        expanded.extend(files)
    for path in expanded:
        if not path.is_file() and path not in xml_folders:
            report.failures.append(ImportFailure(str(path), None, None, "no such file"))
            continue
        logger.info("importing %s", path)
        try:
            file_report = store.import_records(
                _iter_files(xml_folders[path]) if path in xml_folders else iter_file(path),
                source=str(path),
                kind="file",
                progress=progress,
                batch_size=batch_size,
            )
        except DataError as exc:
            report.failures.append(ImportFailure(str(path), None, None, str(exc)))
            continue
        file_report.files = 1
        report.merge(file_report)
    report.table_counts = store.table_counts()
    return report
