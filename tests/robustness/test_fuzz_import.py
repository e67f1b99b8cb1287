"""Fuzz test of ``trials import`` (issue 13): damaged real records mixed with intact ones.

Real records from ``../shared/data/ctgov`` are damaged at random (seeded, so a failure
reproduces): truncations, byte flips, type changes of fields, deep nesting, huge strings,
invalid UTF-8, valid JSON that is not a study. They are shuffled among intact records into
two JSONL files (one gzipped) and imported in one run.

The contract asserted, record by record:

* every intact record is stored, byte for byte, and is its study's current version;
* a record that is not JSON (truncated, invalid UTF-8, nested too deeply) or not a study (not
  an object, no ``protocolSection`` object, no valid NCT id) is skipped and named: file,
  position (``line N``) and a reason of its kind;
* a record that is JSON and a study but damaged is stored when the tolerant normaliser can
  index it, or skipped as an "unusable record"; which one is fixed per type change (the
  table below) and, for byte flips, checked against an independent parse;
* a huge string (1-3 MB) in a valid record is stored;
* every record is accounted for exactly once (stored or skipped), nothing raises, the CLI
  exits 1 with the failures listed and no traceback, every stored record can be read back
  whole (screening reads them all), and memory stays bounded.
"""

from __future__ import annotations

import copy
import gzip
import json
import random
import re
import threading
from pathlib import Path
from typing import Any

import orjson
import psutil
import pytest
from typer.testing import CliRunner

from irtscope.cli import app
from irtscope.trials import Store, import_paths

SEED = 13
N_INTACT = 100
#: damaged variants per kind (240 in all)
KINDS = {
    "truncate": 40,
    "flip": 60,
    "type": 40,
    "deep": 20,
    "huge": 20,
    "utf8": 30,
    "not_study": 30,
}
#: type changes: where, the new value, and what the import does with it ("stored" or the
#: start of the reason it is skipped for)
TYPE_CHANGES: list[tuple[tuple[str, ...], Any, str]] = [
    (("protocolSection", "identificationModule", "briefTitle"), 123, "stored"),
    (("protocolSection", "designModule", "enrollmentInfo", "count"), "many", "stored"),
    (("protocolSection", "conditionsModule", "conditions"), "NSCLC", "stored"),
    (("hasResults",), "yes", "stored"),
    (("protocolSection", "designModule", "phases"), {"a": 1}, "stored"),
    (("protocolSection", "contactsLocationsModule", "locations"), "Boston", "stored"),
    (("protocolSection", "statusModule", "startDateStruct", "date"), 2020, "stored"),
    (("protocolSection", "statusModule"), "x", "unusable record"),
    (("protocolSection", "identificationModule", "nctId"), 12345, "no NCT id"),
    (("protocolSection",), [1], "no protocolSection"),
]
NOT_STUDIES = [
    b'"text"',
    b"42",
    b"null",
    b"true",
    b'{"foo": 1}',
    b'{"protocolSection": [1]}',
    b'{"protocolSection": {"identificationModule": {"nctId": "NCT123"}}}',
]
BAD_UTF8 = [b"\xff", b"\xc3\x28", b"\xed\xa0\x80", b"\xf8\x88\x80\x80\x80", b"\x80abc"]
_NCT = re.compile(r"NCT\d{8}")


def _load(path: Path) -> list[dict[str, Any]]:
    with gzip.open(path) as handle:
        return orjson.loads(handle.read())


def _renumbered(record: dict[str, Any], number: int) -> dict[str, Any]:
    """A copy under a fresh NCT id (``NCT8...``), without aliases: a damaged variant that is
    stored is then a study of its own, never a version (or alias) of an intact record."""
    study = copy.deepcopy(record)
    ident = study["protocolSection"]["identificationModule"]
    ident["nctId"] = f"NCT8{number:07d}"
    ident.pop("nctIdAliases", None)
    return study


def _set(study: dict[str, Any], path: tuple[str, ...], value: Any) -> None:
    node = study
    for key in path[:-1]:
        node = node.setdefault(key, {})
    node[path[-1]] = value


def _damage(kind: str, record: dict[str, Any], rng: random.Random) -> tuple[bytes, str]:
    """One damaged line and the outcome it must have (``stored``, a reason, or ``oracle``)."""
    raw = orjson.dumps(record)
    if kind == "truncate":
        return raw[: rng.randrange(1, len(raw) - 1)], "invalid JSON"
    if kind == "flip":
        data = bytearray(raw)
        for _ in range(rng.randint(1, 3)):
            at = rng.randrange(len(data))
            flipped = data[at] ^ rng.randrange(1, 256)
            data[at] = flipped if flipped != 0x0A else 0x20  # a line break would split it
        return bytes(data), "oracle"
    if kind == "type":
        path, value, outcome = TYPE_CHANGES[rng.randrange(len(TYPE_CHANGES))]
        _set(record, path, value)
        return orjson.dumps(record), outcome
    if kind == "deep":
        levels = rng.randint(1000, 5000)
        opener, closer = rng.choice([(b"[", b"]"), (b'{"a": ', b"}")])
        inner = b"[]" if opener == b"[" else b"1"
        nested = opener * levels + inner + closer * levels
        return raw[:-1] + b', "extra": ' + nested + b"}", "nested too deeply"
    if kind == "huge":
        words = "".join(rng.choice("abcdefghij klmnop") for _ in range(1000))
        text = words * rng.randint(1000, 3000)  # 1-3 MB
        record.setdefault("protocolSection", {}).setdefault("descriptionModule", {})[
            "briefSummary"
        ] = text
        return orjson.dumps(record), "stored"
    if kind == "utf8":
        _set(record, ("protocolSection", "identificationModule", "briefTitle"), "@@MARK@@")
        bad = rng.choice(BAD_UTF8)
        return orjson.dumps(record).replace(b"@@MARK@@", b"A" + bad + b"B"), "not UTF-8"
    if kind == "not_study":
        return rng.choice(NOT_STUDIES), "not a study"
    raise AssertionError(kind)


def _reject_constant(name: str) -> None:
    raise ValueError(f"not JSON: {name}")


def _oracle(raw: bytes) -> str:
    """What a line is, by Python's own parser: ``invalid``, ``not_study`` or ``study``."""
    try:
        value = json.loads(raw.decode("utf-8"), parse_constant=_reject_constant)
    except (UnicodeDecodeError, ValueError, RecursionError):
        return "invalid"
    ps = value.get("protocolSection") if isinstance(value, dict) else None
    ident = ps.get("identificationModule") if isinstance(ps, dict) else None
    nct = ident.get("nctId") if isinstance(ident, dict) else None
    if isinstance(nct, str) and _NCT.fullmatch(nct):
        return "study"
    return "not_study"


#: reasons a line that is not a study may be skipped for
_NOT_A_STUDY = ("expected a JSON object", "no protocolSection", "no NCT id", "invalid NCT id")


def _allowed(expected: str, raw: bytes) -> tuple[str, ...]:
    """Outcomes (``stored`` or reason prefixes) that a line may have."""
    if expected == "not a study":
        return _NOT_A_STUDY
    if expected == "oracle":
        kind = _oracle(raw)
        if kind == "invalid":
            return ("invalid JSON", "not UTF-8", "nested too deeply")
        if kind == "not_study":
            return _NOT_A_STUDY
        return ("stored", "unusable record")
    if expected in ("invalid JSON", "not UTF-8", "nested too deeply", "stored"):
        return (expected,)
    return (expected,)


class _PeakRss:
    """Samples this process's resident memory in a thread (psutil), keeping the peak."""

    def __init__(self) -> None:
        self._process = psutil.Process()
        self.start = self.peak = self._process.memory_info().rss
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.wait(0.02):
            self.peak = max(self.peak, self._process.memory_info().rss)

    def __enter__(self) -> _PeakRss:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, self._process.memory_info().rss)


def _write_inputs(ctgov_dir: Path, folder: Path) -> tuple[list[Path], dict[tuple[str, str], Any]]:
    """Two JSONL files (the second gzipped) of intact and damaged lines, shuffled.

    Returns the files and, per (file, "line N"), ``("intact", bytes)`` or
    ``(kind, bytes, expected)``.
    """
    rng = random.Random(SEED)
    records = _load(ctgov_dir / "nsclc_150.json.gz")
    bases = records[N_INTACT:] + _load(ctgov_dir / "aact_fixtures_13.json.gz")
    bases = [b for b in bases if isinstance(b.get("protocolSection"), dict)]
    lines: list[tuple[str, bytes, str]] = [
        ("intact", orjson.dumps(r), "stored") for r in records[:N_INTACT]
    ]
    number = 0
    for kind, count in KINDS.items():
        for _ in range(count):
            number += 1
            base = _renumbered(bases[rng.randrange(len(bases))], number)
            raw, expected = _damage(kind, base, rng)
            assert b"\n" not in raw
            lines.append((kind, raw, expected))
    rng.shuffle(lines)
    half = len(lines) // 2
    plain, packed = folder / "mixed.jsonl", folder / "mixed.jsonl.gz"
    plain.write_bytes(b"\n".join(raw for _, raw, _ in lines[:half]) + b"\n")
    packed.write_bytes(gzip.compress(b"\n".join(raw for _, raw, _ in lines[half:])))
    where: dict[tuple[str, str], Any] = {}
    for path, part in ((plain, lines[:half]), (packed, lines[half:])):
        for lineno, (kind, raw, expected) in enumerate(part, start=1):
            where[(str(path), f"line {lineno}")] = (kind, raw, expected)
    return [plain, packed], where


def test_damaged_records_are_named_and_skipped_intact_ones_stored(
    ctgov_dir: Path, tmp_path: Path
) -> None:
    paths, where = _write_inputs(ctgov_dir, tmp_path)
    damaged = sum(KINDS.values())
    assert damaged >= 200 and len(where) == damaged + N_INTACT

    with Store(tmp_path / "fuzz.duckdb") as store:
        with _PeakRss() as rss:
            report = import_paths(store, paths)
        stored = {
            (source, locator): (nct, version)
            for source, locator, nct, version in store.con.execute(
                "SELECT source, locator, nct_id, version FROM entries"
            ).fetchall()
        }
        raws = dict(
            ((nct, version), (raw, current))
            for nct, version, raw, current in store.con.execute(
                "SELECT nct_id, version, raw, is_current FROM study_versions"
            ).fetchall()
        )
        readable = sum(1 for _ in store.iter_studies())  # what screening reads
        study_count = store.study_count()

    skipped = {(f.path, f.position): f.reason for f in report.failures}
    assert all(f.position for f in report.failures), "every failure names its position"
    assert not set(skipped) & set(stored), "a record was both stored and skipped"
    assert set(skipped) | set(stored) == set(where), "every record accounted for"

    outcome_counts: dict[str, dict[str, int]] = {}
    for key, (kind, raw, expected) in where.items():
        outcome = "stored" if key in stored else skipped[key]
        allowed = _allowed(expected, raw)
        assert any(outcome.startswith(a) or a in outcome for a in allowed), (
            f"{key} ({kind}): {outcome!r}, expected one of {allowed}"
        )
        if key in stored:
            raw_stored, current = raws[stored[key]]
            assert raw_stored.encode() == raw.strip(), f"{key} ({kind}) not stored as written"
            if kind == "intact":
                assert current, f"{key}: intact record is not current"
        tally = outcome_counts.setdefault(kind, {"stored": 0, "skipped": 0})
        tally["stored" if key in stored else "skipped"] += 1

    n_stored_damaged = sum(t["stored"] for k, t in outcome_counts.items() if k != "intact")
    n_skipped = len(skipped)
    assert outcome_counts["intact"] == {"stored": N_INTACT, "skipped": 0}
    assert outcome_counts["huge"]["skipped"] == 0
    for kind in ("truncate", "deep", "utf8", "not_study"):
        assert outcome_counts[kind]["stored"] == 0, kind
    assert readable == study_count == N_INTACT + n_stored_damaged
    growth_mb = (rss.peak - rss.start) / 2**20
    summary = (
        f"fuzz import: {damaged} damaged + {N_INTACT} intact records; "
        f"{n_skipped} skipped (named), {n_stored_damaged} damaged-but-valid stored, "
        f"{outcome_counts['intact']['stored']} intact stored; peak RSS growth {growth_mb:.0f} MB; "
        f"per kind (stored/skipped): "
        + ", ".join(f"{k} {t['stored']}/{t['skipped']}" for k, t in outcome_counts.items())
    )
    print(summary)
    (tmp_path / "fuzz_counts.txt").write_text(summary, encoding="utf-8")
    assert growth_mb < 500, summary  # generous: DuckDB's cache is capped at 128 MB

    # The CLI in one run: failures listed, exit 1, no traceback.
    result = CliRunner().invoke(
        app, ["--quiet", "trials", "import", "--db", str(tmp_path / "cli.duckdb"), *map(str, paths)]
    )
    assert result.exit_code == 1, result.output
    assert not isinstance(result.exception, Exception) or isinstance(
        result.exception, SystemExit
    ), repr(result.exception)
    assert "Traceback" not in result.output
    assert f"{n_skipped} failure(s)" in result.output


@pytest.fixture(autouse=True)
def _shared(ctgov_dir: Path) -> None:
    """Skip (with the reason) when the shared registry records are absent."""
    if not (ctgov_dir / "nsclc_150.json.gz").is_file():
        pytest.skip(f"shared registry records not found in {ctgov_dir}")
