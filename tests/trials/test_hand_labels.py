"""Precision and recall of the text classifiers against hand-checked labels of real records.

The labels (``data/hand_labels.yaml``) were written by reading each record. Thresholds sit a
little below the figures measured when the labels were written, so a regression fails the
test while the figures themselves are printed (``pytest -s``) for the report.
"""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import pytest
import yaml

from irtscope.trials import classify_studies

LABELS = Path(__file__).parent / "data" / "hand_labels.yaml"
POP_VARIABLES = (
    "pop_metastatic_site",
    "pop_primary_site",
    "pop_lymph_nodes",
    "pop_patient_status",
)
#: minimum (precision, recall) per classifier; measured values are in the closing note.
THRESHOLDS = {
    "rt_technology": (0.90, 0.90),
    "rt_dose": (0.85, 0.85),
    "ici_drug": (0.95, 0.95),
    "pop": (0.70, 0.85),
}


def _records() -> list[dict]:
    return yaml.safe_load(LABELS.read_text(encoding="utf-8"))["records"]


@pytest.fixture(scope="module")
def predictions(ctgov_dir: Path) -> tuple[list[dict], dict[str, set[tuple[str, str]]]]:
    records = _records()
    wanted = {r["nct_id"]: r["source"] for r in records}
    studies: dict[str, dict] = {}
    for source in sorted(set(wanted.values())):
        with gzip.open(ctgov_dir / f"{source}.json.gz", "rt", encoding="utf-8") as fh:
            for study in json.load(fh):
                nct = study["protocolSection"]["identificationModule"]["nctId"]
                if wanted.get(nct) == source and nct not in studies:
                    studies[nct] = study
    missing = sorted(set(wanted) - set(studies))
    assert not missing, f"hand-labelled records not found in shared data: {missing}"
    frame = classify_studies([studies[r["nct_id"]] for r in records], "nsclc-irt")
    predicted: dict[str, set[tuple[str, str]]] = {k: set() for k in THRESHOLDS}
    for row in frame.itertuples():
        if row.variable in ("rt_technology", "rt_dose", "ici_drug"):
            predicted[row.variable].add((row.nct_id, row.value))
        elif row.variable in POP_VARIABLES:
            predicted["pop"].add((row.nct_id, f"{row.variable}={row.value}"))
    return records, predicted


def _expected(records: list[dict], key: str) -> set[tuple[str, str]]:
    return {(r["nct_id"], v) for r in records for v in r[key]}


def precision_recall(expected: set, predicted: set) -> tuple[float, float]:
    tp = len(expected & predicted)
    precision = tp / len(predicted) if predicted else 1.0
    recall = tp / len(expected) if expected else 1.0
    return precision, recall


def test_labels_are_well_formed() -> None:
    records = _records()
    assert len(records) >= 40
    assert len({r["nct_id"] for r in records}) == len(records)
    for r in records:
        assert set(r) >= {"nct_id", "source", "rt_technology", "rt_dose", "ici_drug", "pop"}
        assert set(r) <= {
            "nct_id",
            "source",
            "holdout",
            "note",
            "rt_technology",
            "rt_dose",
            "ici_drug",
            "pop",
        }
        for item in r["pop"]:
            variable, _, value = item.partition("=")
            assert variable in POP_VARIABLES and value


@pytest.mark.parametrize("classifier", sorted(THRESHOLDS))
def test_precision_recall(classifier: str, predictions: tuple) -> None:
    records, predicted = predictions
    expected = _expected(records, classifier)
    got = predicted[classifier]
    precision, recall = precision_recall(expected, got)
    # records labelled after the dictionaries were final (never used to tune them)
    held = {r["nct_id"] for r in records if r.get("holdout")}
    h_exp = {x for x in expected if x[0] in held}
    h_got = {x for x in got if x[0] in held}
    h_precision, h_recall = precision_recall(h_exp, h_got)
    print(
        f"\n{classifier}: precision {precision:.2f} recall {recall:.2f} "
        f"(labels {len(expected)}, predicted {len(got)}, true positives {len(expected & got)}); "
        f"held-out {len(held)} records: precision {h_precision:.2f} recall {h_recall:.2f} "
        f"(labels {len(h_exp)}, predicted {len(h_got)})"
        f"\n  missed: {sorted(expected - got)}\n  extra: {sorted(got - expected)}"
    )
    min_precision, min_recall = THRESHOLDS[classifier]
    assert precision >= min_precision
    assert recall >= min_recall
