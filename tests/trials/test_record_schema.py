"""The import's typed fast path gives exactly the rows of the tolerant dict normalizer."""

from __future__ import annotations

import copy
import gzip
import json
from pathlib import Path
from typing import Any

import orjson
import pytest

from irtscope.trials import Store
from irtscope.trials._normalize import (
    canonical_bytes,
    canonical_json,
    nct_id_of,
    normalize_rows,
    version_info,
)
from irtscope.trials._record_schema import fast_rows
from irtscope.trials._sources_files import RawRecord


@pytest.fixture(scope="module")
def shared_records(ctgov_dir: Path) -> list[dict]:
    records: list[dict] = []
    for path in sorted(ctgov_dir.glob("*.json.gz")):
        with gzip.open(path) as handle:
            records.extend(orjson.loads(handle.read()))
    assert len(records) == 1976
    return records


def test_every_shared_record_takes_the_fast_path_with_identical_rows(
    shared_records: list[dict],
) -> None:
    for study in shared_records:
        canonical = canonical_json(study)
        fast = fast_rows(canonical)
        nct = nct_id_of(study)
        assert fast is not None, f"{nct} does not fit the typed schema"
        assert fast.nct_id == nct
        assert (fast.last_update_posted, fast.version_holder) == version_info(study)
        expected = normalize_rows(study)
        for table, rows in expected.items():
            assert fast.rows[table] == rows, f"{nct}: {table} differs"


def test_pretty_printed_bytes_canonicalise_to_the_compact_form(
    shared_records: list[dict],
) -> None:
    study = shared_records[0]
    pretty = json.dumps(study, indent=2, ensure_ascii=False).encode()
    assert canonical_bytes(pretty) == canonical_json(study)


def _set(study: dict, path: str, value: Any) -> dict:
    changed = copy.deepcopy(study)
    *parents, last = path.split(".")
    node = changed
    for key in parents:
        node = node.setdefault(key, {})
    node[last] = value
    return changed


@pytest.mark.parametrize(
    ("path", "value"),
    [
        ("protocolSection.designModule.enrollmentInfo.count", "120"),
        ("protocolSection.designModule.enrollmentInfo.count", True),
        ("protocolSection.designModule.phases", ["PHASE2", None]),
        ("protocolSection.conditionsModule.conditions", ["NSCLC", 7]),
        ("protocolSection.statusModule.startDateStruct", {"date": 2019, "type": "ACTUAL"}),
        ("protocolSection.contactsLocationsModule.locations", [{"city": "Oslo"}, "Bergen"]),
        ("protocolSection.sponsorCollaboratorsModule.leadSponsor", {"name": 5}),
        ("hasResults", "no"),
    ],
)
def test_records_off_the_schema_fall_back_to_the_tolerant_rules(
    shared_records: list[dict], path: str, value: Any
) -> None:
    study = _set(shared_records[0], path, value)
    assert fast_rows(canonical_json(study)) is None
    with Store(":memory:") as store:
        report = store.import_records([RawRecord("t", "item 0", study=study)], source="t")
        assert report.ok and report.new_studies == 1
        stored = store.con.execute(
            "SELECT enrollment_count, phases, has_results FROM studies"
        ).fetchone()
    rows = normalize_rows(study)["studies"][0]
    assert stored is not None
    assert stored[0] == rows[30] and stored[1] == rows[29] and stored[2] == rows[9]


def test_empty_lead_sponsor_object_gives_no_sponsor_row_either_way(
    shared_records: list[dict],
) -> None:
    study = _set(shared_records[0], "protocolSection.sponsorCollaboratorsModule.leadSponsor", {})
    fast = fast_rows(canonical_json(study))
    assert fast is not None
    assert [r for r in fast.rows["sponsors"] if r[1] == "lead"] == []
    assert fast.rows["sponsors"] == normalize_rows(study)["sponsors"]


_NCT1 = b'{"protocolSection": {"identificationModule": {"nctId": "NCT00000001"}}'
_NCT2 = (
    b'{"protocolSection": {"identificationModule": {"nctId": "NCT00000002"}, '
    b'"conditionsModule": {"conditions": ["NSCLC"]}}'
)


def test_not_a_study_is_worded_by_the_tolerant_rules() -> None:
    assert fast_rows(b"[1,2]") is None
    assert fast_rows(b'{"protocolSection":"x"}') is None
    assert fast_rows(b'{"other":1}') is None
    with Store(":memory:") as store:
        records = [
            RawRecord("t", "item 0", raw=b"[1, 2]"),
            RawRecord("t", "item 1", raw=b'{"protocolSection": "x"}'),
            RawRecord("t", "item 2", raw=b'{"protocolSection": {"eligibilityModule": "x"}}'),
            RawRecord("t", "item 3", raw=b'{"protocolSection": {"identificationModule": '),
            RawRecord("t", "item 4", raw=_NCT1 + b', "x": "\xff"}'),
            RawRecord("t", "item 5", raw=_NCT2 + b', "x": "caf\xc3\xa9"}'),
        ]
        report = store.import_records(records, source="t")
        # the bad byte sits where the parse does not look: the batch check finds it, and
        # the rest of the batch is stored with its child rows
        stored = store.con.execute("SELECT nct_id FROM study_versions").fetchall()
        assert stored == [("NCT00000002",)]
        assert store.con.execute("SELECT count(*) FROM conditions").fetchone() == (1,)
    reasons = {f.position: f.reason for f in report.failures}
    assert reasons["item 0"] == "not a JSON object (list)"
    assert reasons["item 1"] == "no protocolSection: not an API v2 study"
    assert reasons["item 2"].startswith("unusable record")
    assert reasons["item 3"].startswith("invalid JSON")
    assert reasons["item 4"].startswith("not UTF-8 text")
