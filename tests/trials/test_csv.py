"""Registry CSV download: written from real records, imported back, same values as JSON."""

from __future__ import annotations

import csv
import gzip
from pathlib import Path

import orjson
import pytest

from irtscope.trials import Store, import_paths, studies_to_registry_csv
from irtscope.trials._sources_csv import CSV_COLUMNS, csv_row_to_study, parse_location

# Columns of the normalized tables that the registry CSV carries.
CARRIED = {
    "studies": [
        "brief_title",
        "acronym",
        "org_study_id",
        "overall_status",
        "has_results",
        "start_date",
        "start_date_precision",
        "start_date_value",
        "primary_completion_date",
        "primary_completion_date_precision",
        "completion_date",
        "first_posted_date",
        "results_first_posted_date",
        "last_update_posted_date",
        "study_type",
        "phases",
        "enrollment_count",
        "allocation",
        "intervention_model",
        "masking",
        "who_masked",
        "primary_purpose",
        "sex",
        "age_groups",
        "lead_sponsor",
        "lead_sponsor_class",
        "n_locations",
    ],
    "sponsors": ["position", "role", "name"],
    "conditions": ["position", "condition"],
    "interventions": ["position", "intervention_type", "name"],
    "secondary_ids": ["position", "secondary_id"],
}


def _load(path: Path) -> list[dict]:
    with gzip.open(path) as handle:
        return orjson.loads(handle.read())


def _has_pipe(study: dict) -> bool:
    """The CSV joins lists with '|': a value containing '|' cannot round-trip (CSV limit)."""
    ps = study["protocolSection"]
    values = [
        *(ps.get("conditionsModule", {}).get("conditions", [])),
        *(
            i.get("name", "")
            for i in ps.get("armsInterventionsModule", {}).get("interventions", [])
        ),
        *(str(loc) for loc in ps.get("contactsLocationsModule", {}).get("locations", [])),
        *(
            c.get("name", "")
            for c in ps.get("sponsorCollaboratorsModule", {}).get("collaborators", [])
        ),
        *(s.get("id", "") for s in ps["identificationModule"].get("secondaryIdInfos", [])),
    ]
    return any("|" in v for v in values)


@pytest.fixture(scope="module")
def records(ctgov_dir: Path) -> list[dict]:
    return _load(ctgov_dir / "nsclc_150.json.gz") + _load(ctgov_dir / "urology_635.json.gz")


def _rows(store: Store, table: str, columns: list[str]) -> dict[str, list[tuple]]:
    out: dict[str, list[tuple]] = {}
    order = ", position" if "position" in columns else ""
    for row in store.con.execute(
        f"SELECT nct_id, {', '.join(columns)} FROM current_{table} ORDER BY nct_id{order}"
    ).fetchall():
        out.setdefault(row[0], []).append(tuple(row[1:]))
    return out


def test_csv_round_trip_matches_json_import(records: list[dict], tmp_path: Path) -> None:
    kept = [r for r in records if not _has_pipe(r)]
    assert len(kept) >= len(records) - 10  # the '|' limitation touches only a few records
    json_path = tmp_path / "records.jsonl"
    json_path.write_bytes(b"\n".join(orjson.dumps(r) for r in kept))
    csv_path = tmp_path / "ctg-studies.csv"
    assert studies_to_registry_csv(kept, csv_path) == len(kept)
    with csv_path.open(encoding="utf-8", newline="") as handle:
        header = next(csv.reader(handle))
    assert ",".join(header).startswith("NCT Number,Study Title,Study URL,Acronym,Study Status,")

    with Store(":memory:") as from_json, Store(":memory:") as from_csv:
        assert import_paths(from_json, [json_path]).ok
        report = import_paths(from_csv, [csv_path])
        assert report.ok and report.new_studies == from_json.study_count()
        for table, columns in CARRIED.items():
            assert _rows(from_csv, table, columns) == _rows(from_json, table, columns), table

        # Locations: the country always survives; the other parts survive as the joined text
        # ("facility, city, state, zip"), which is all the CSV says about them.
        # (whitespace around the commas is not something the CSV can keep)
        def locations(store: Store) -> list[tuple]:
            return store.con.execute(
                "SELECT nct_id, position, country, regexp_replace(concat_ws(', ', facility, "
                "city, state, zip), '\\s*,\\s*', ', ', 'g') "
                "FROM current_locations ORDER BY nct_id, position"
            ).fetchall()

        assert locations(from_csv) == locations(from_json)


def test_csv_row_mapping() -> None:
    row = dict.fromkeys(CSV_COLUMNS, "")
    row.update(
        {
            "NCT Number": "NCT01234567",
            "Study Title": "SBRT plus pembrolizumab",
            "Study Status": "TERMINATED",
            "Study Results": "YES",
            "Conditions": "NSCLC|Lung Cancer",
            "Interventions": "DRUG: Pembrolizumab|RADIATION: SBRT",
            "Sponsor": "Some University",
            "Collaborators": "Merck Sharp & Dohme LLC",
            "Funder Type": "OTHER",
            "Age": "ADULT, OLDER_ADULT",
            "Phases": "PHASE1|PHASE2",
            "Enrollment": "42",
            "Study Design": "Allocation: RANDOMIZED|Intervention Model: PARALLEL|"
            "Masking: DOUBLE (PARTICIPANT, INVESTIGATOR)|Primary Purpose: TREATMENT",
            "Other IDs": "ORG-1|2019-000001-11",
            "Start Date": "2019-03",
            "Locations": "UCSD, Moores Cancer Center, La Jolla, California, 92093, United States",
        }
    )
    ps = csv_row_to_study(row)["protocolSection"]
    assert ps["statusModule"]["startDateStruct"] == {"date": "2019-03"}
    assert ps["designModule"]["designInfo"]["maskingInfo"] == {
        "masking": "DOUBLE",
        "whoMasked": ["PARTICIPANT", "INVESTIGATOR"],
    }
    assert ps["designModule"]["phases"] == ["PHASE1", "PHASE2"]
    assert ps["armsInterventionsModule"]["interventions"][1] == {
        "type": "RADIATION",
        "name": "SBRT",
    }
    assert ps["identificationModule"]["orgStudyIdInfo"] == {"id": "ORG-1"}
    assert ps["contactsLocationsModule"]["locations"][0] == {
        "facility": "UCSD, Moores Cancer Center",
        "city": "La Jolla",
        "state": "California",
        "zip": "92093",
        "country": "United States",
    }


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("Hospital, Paris, France", {"facility": "Hospital", "city": "Paris", "country": "France"}),
        (
            "Site 1, Boston, Massachusetts, 02114, United States",
            {
                "facility": "Site 1",
                "city": "Boston",
                "state": "Massachusetts",
                "zip": "02114",
                "country": "United States",
            },
        ),
        ("Tokyo, Japan", {"city": "Tokyo", "country": "Japan"}),
    ],
)
def test_parse_location(text: str, expected: dict) -> None:
    assert parse_location(text) == expected


def test_csv_bad_rows_reported(tmp_path: Path) -> None:
    path = tmp_path / "x.csv"
    with path.open("w", encoding="utf-8", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(CSV_COLUMNS)
        writer.writerow(["NCT01234567", "ok", *[""] * (len(CSV_COLUMNS) - 2)])
        writer.writerow(["", "no id", *[""] * (len(CSV_COLUMNS) - 2)])
        writer.writerow(["NCT07654321", "too many", *[""] * len(CSV_COLUMNS)])
    with Store(":memory:") as store:
        report = import_paths(store, [path])
        assert report.new_studies == 1
        assert sorted((f.position, f.reason) for f in report.failures) == [
            ("line 3", "empty NCT Number"),
            ("line 4", "more fields than the header"),
        ]
