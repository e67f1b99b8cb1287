"""Issue 13, defects 6 and 7: bad evaluation inputs are one clear line or reported, never a
traceback, a misleading hint or a silently missing cohort.

The cohorts are the small synthetic lesion frames of ``test_models`` (3 cohorts, 90 patients)
with a few trees, so each CLI run takes a second or two.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from test_models import lesion_frame
from typer.testing import CliRunner

from irtscope import IrtscopeError
from irtscope.imaging._models import radiomics_columns
from irtscope.imaging._validation import internal_external_table, merge_features

MANIFEST_COLUMNS = ["patient_id", "lesion_id", "cohort", "pd", "os_time", "os_event",
                    "pfs_time", "pfs_event", "pdl1", "arm", "simulated"]
FAST = {"n_estimators": 10, "n_boot": 10, "n_splits": 3, "tune": False, "random_state": 0}


@pytest.fixture(scope="module")
def frame() -> pd.DataFrame:
    return lesion_frame()


def _split(frame: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    manifest = frame[MANIFEST_COLUMNS].assign(image_path="img.nii.gz", mask_path="mask.nii.gz")
    features = frame[["lesion_id", "patient_id", "cohort", *radiomics_columns(frame)]]
    return manifest, features.copy()


def _evaluate(
    tmp_path: Path, manifest: pd.DataFrame, features: pd.DataFrame, *, tasks: str = "pd"
):
    """``imaging evaluate`` on these tables (harmonisation off and on, as by default)."""
    from irtscope.cli import app

    manifest.to_csv(tmp_path / "manifest.csv", index=False)
    features.to_parquet(tmp_path / "features.parquet")
    return CliRunner().invoke(
        app,
        ["imaging", "evaluate", "--manifest", str(tmp_path / "manifest.csv"),
         "--features", str(tmp_path / "features.parquet"), "--out", str(tmp_path / "out"),
         "--development", "DEV", "--tasks", tasks, "--n-boot", "10", "--n-estimators", "10",
         "--n-splits", "3", "--no-tune"],
    )


def _one_line_error(result) -> str:
    """The CLI's main() turns an IrtscopeError into one stderr line and exit 1."""
    assert result.exit_code != 0
    assert isinstance(result.exception, IrtscopeError), repr(result.exception)
    message = str(result.exception)
    assert "\n" not in message
    return message


# -- defect 6 ---------------------------------------------------------------------------------
def test_one_class_development_cohort_is_one_line(frame: pd.DataFrame, tmp_path: Path) -> None:
    manifest, features = _split(frame)
    manifest.loc[manifest["cohort"] == "DEV", "pd"] = 0  # IndexError before
    message = _one_line_error(_evaluate(tmp_path, manifest, features))
    assert "'DEV'" in message and "one class" in message and "pd" in message


def test_duplicate_lesion_id_in_features_is_one_line(frame: pd.DataFrame, tmp_path: Path) -> None:
    manifest, features = _split(frame)
    duplicated = features.iloc[[5]].assign(original_firstorder_f0=0.0)
    features = pd.concat([features, duplicated], ignore_index=True)  # MergeError before
    message = _one_line_error(_evaluate(tmp_path, manifest, features))
    assert repr(str(features["lesion_id"].iloc[5])) in message and "features" in message


def test_external_cohort_with_all_features_missing_is_one_line(
    frame: pd.DataFrame, tmp_path: Path
) -> None:
    manifest, features = _split(frame)
    columns = radiomics_columns(features)
    features.loc[features["cohort"] == "EXT1", columns] = np.nan  # ValueError (ComBat) before
    message = _one_line_error(_evaluate(tmp_path, manifest, features))
    assert "'EXT1'" in message and "missing" in message


# -- defect 7 ---------------------------------------------------------------------------------
def test_all_missing_and_constant_columns_are_dropped_and_listed(frame: pd.DataFrame) -> None:
    data = frame.copy()
    data["original_firstorder_f3"] = np.nan
    data["original_firstorder_f4"] = 7.0
    result = internal_external_table(
        data, development="DEV", tasks=("pd",), harmonize=(False, True), **FAST
    )  # ComBat run: DataError "use fewer folds, or more patients" before
    assert result.table["estimate"].notna().all()
    excluded = result.excluded
    dropped = excluded[excluded["problem"] == "column dropped"].set_index("column")["reason"]
    assert "all values missing" in dropped["original_firstorder_f3"]
    assert "constant" in dropped["original_firstorder_f4"]
    assert result.settings["n_radiomics_features"] == len(radiomics_columns(data)) - 2


def test_infinite_values_are_named_and_treated_as_missing(frame: pd.DataFrame) -> None:
    data = frame.copy()
    lesion = data["lesion_id"].iloc[3]
    data.loc[3, "original_firstorder_f2"] = np.inf
    result = internal_external_table(
        data, development="DEV", tasks=("pd",), harmonize=(False,), **FAST
    )  # "Input X contains infinity ... use fewer folds, or more patients" before
    assert result.table["estimate"].notna().all()
    row = result.excluded[result.excluded["problem"] == "infinite value"].iloc[0]
    assert row["lesion_id"] == lesion and row["column"] == "original_firstorder_f2"


def test_cli_reports_dropped_columns_and_unmatched_lesions(
    frame: pd.DataFrame, tmp_path: Path
) -> None:
    manifest, features = _split(frame)
    features["original_firstorder_f3"] = np.nan
    gone = features["lesion_id"].iloc[[0, 1]].tolist()
    features = features.drop(index=[0, 1])
    stray = features.iloc[[0]].assign(lesion_id="NOT-IN-MANIFEST")
    features = pd.concat([features, stray], ignore_index=True)
    result = _evaluate(tmp_path, manifest, features)
    assert result.exit_code == 0, result.output
    out = tmp_path / "out"
    unmatched = pd.read_csv(out / "unmatched_lesions.csv")
    assert set(unmatched["lesion_id"]) == {*gone, "NOT-IN-MANIFEST"}
    assert "warning" in result.output and "unmatched_lesions.csv" in result.output
    excluded = pd.read_csv(out / "excluded_features.csv")
    assert "original_firstorder_f3" in set(excluded["column"])
    html = (out / "report.html").read_text(encoding="utf-8")
    assert "original_firstorder_f3" in html and "lesions without features" in html
    # a clean rerun into the same folder leaves no stale lists behind
    manifest, features = _split(frame)
    assert _evaluate(tmp_path, manifest, features).exit_code == 0
    assert not (out / "unmatched_lesions.csv").exists()
    assert not (out / "excluded_features.csv").exists()


def test_a_whole_cohort_without_features_is_an_error(frame: pd.DataFrame, tmp_path: Path) -> None:
    manifest, features = _split(frame)
    features = features[features["cohort"] != "EXT2"]  # exit 0, EXT2 silently absent before
    message = _one_line_error(_evaluate(tmp_path, manifest, features))
    assert "'EXT2'" in message and "no features" in message


def test_merge_features_compares_lesion_ids_as_text(frame: pd.DataFrame) -> None:
    manifest, features = _split(frame.head(30))
    manifest["lesion_id"] = [str(i) for i in range(30)]
    features["lesion_id"] = list(range(30))  # int ids from a parquet file, str from a CSV
    assert len(merge_features(manifest, features)) == 30


def test_external_cohort_without_labels_is_a_row_with_a_note(frame: pd.DataFrame) -> None:
    data = frame.copy()
    data["pd"] = data["pd"].astype(float)
    data.loc[data["cohort"] == "EXT2", "pd"] = np.nan  # silently absent from the table before
    result = internal_external_table(
        data, development="DEV", tasks=("pd",), harmonize=(False,), **FAST
    )
    row = result.table.set_index("cohort").loc["EXT2"]
    assert np.isnan(row["estimate"]) and "no pd labels" in row["note"]
