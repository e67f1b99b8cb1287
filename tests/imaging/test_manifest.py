"""Lesion manifest: loading, typing, path resolution and row-naming errors."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from irtscope import DataError
from irtscope.imaging import load_manifest, validate_manifest


def _manifest_rows(n: int = 3) -> list[dict[str, object]]:
    rows = []
    for i in range(n):
        rows.append(
            {
                "patient_id": f"P{i // 2}",
                "lesion_id": f"L{i}",
                "cohort": "DEV",
                "image_path": f"images/L{i}.nii.gz",
                "mask_path": f"masks/L{i}.nii.gz",
                "pd": i % 2,
                "os_time": 12.5 + i // 2,
                "os_event": 1,
                "pdl1": 50.0,
                "arm": "ICI+SBRT",
            }
        )
    return rows


@pytest.fixture
def study(tmp_path: Path) -> Path:
    """A study folder with empty placeholder image/mask files (only existence is checked)."""
    for sub in ("images", "masks"):
        (tmp_path / sub).mkdir()
        for i in range(3):
            (tmp_path / sub / f"L{i}.nii.gz").write_bytes(b"")
    return tmp_path


def _write(folder: Path, rows: list[dict[str, object]], name: str = "manifest.csv") -> Path:
    path = folder / name
    frame = pd.DataFrame(rows)
    if name.endswith(".parquet"):
        frame.to_parquet(path)
    else:
        frame.to_csv(path, index=False)
    return path


def test_valid_csv_loads_typed_with_resolved_paths_and_defaults(study: Path) -> None:
    df = load_manifest(_write(study, _manifest_rows()))
    assert list(df["lesion_id"]) == ["L0", "L1", "L2"]
    assert df.loc[0, "image_path"] == str((study / "images" / "L0.nii.gz").resolve())
    assert Path(df.loc[2, "mask_path"]).is_absolute()
    assert df["mask_label"].tolist() == [1, 1, 1]
    assert df["roi_name"].isna().all()
    assert df["simulated"].dtype == bool
    assert not df["simulated"].any()
    assert str(df["pd"].dtype) == "Int64"
    assert df["os_time"].tolist() == [12.5, 12.5, 13.5]


def test_manifest_works_from_another_working_directory(
    study: Path, tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = _write(study, _manifest_rows())
    monkeypatch.chdir(tmp_path_factory.mktemp("elsewhere"))
    assert load_manifest(path)["image_path"].map(lambda p: Path(p).exists()).all()


def test_parquet_and_ids_that_look_numeric(study: Path) -> None:
    rows = _manifest_rows()
    for i, row in enumerate(rows):
        row["patient_id"] = 100 + i
        row["simulated"] = True
    df = load_manifest(_write(study, rows, "manifest.parquet"))
    assert df["patient_id"].tolist() == ["100", "101", "102"]
    assert df["simulated"].all()


def test_missing_values_in_optional_columns(study: Path) -> None:
    rows = _manifest_rows()
    rows[0].update(pd="NA", pdl1="")
    rows[1].update(pdl1="")  # same patient as row 1: both missing
    df = load_manifest(_write(study, rows))
    assert df["pd"].isna().tolist() == [True, False, False]
    assert df["pdl1"].isna().tolist() == [True, True, False]


def test_input_frame_is_not_modified(study: Path) -> None:
    frame = pd.DataFrame(_manifest_rows())
    before = frame.copy()
    validate_manifest(frame, study)
    pd.testing.assert_frame_equal(frame, before)


def test_missing_required_column(study: Path) -> None:
    rows = _manifest_rows()
    for row in rows:
        del row["cohort"]
    with pytest.raises(DataError, match=r"missing required column.*'cohort'"):
        load_manifest(_write(study, rows))


def test_empty_required_cell_names_row(study: Path) -> None:
    rows = _manifest_rows()
    rows[1]["cohort"] = ""
    with pytest.raises(DataError, match=r"row 2 \(lesion_id 'L1'\), column 'cohort': empty"):
        load_manifest(_write(study, rows))


def test_missing_file_names_row_lesion_and_column(study: Path) -> None:
    rows = _manifest_rows()
    rows[2]["mask_path"] = "masks/nope.nii.gz"
    with pytest.raises(
        DataError, match=r"row 3 \(lesion_id 'L2'\), column 'mask_path': file not found"
    ):
        load_manifest(_write(study, rows))
    # the same manifest is accepted when files are not checked
    assert len(load_manifest(study / "manifest.csv", check_files=False)) == 3


def test_duplicate_lesion_ids_name_both_rows(study: Path) -> None:
    rows = _manifest_rows()
    rows[2]["lesion_id"] = "L0"
    with pytest.raises(DataError, match=r"row 3 \(lesion_id 'L0'\).*duplicate.*row 1"):
        load_manifest(_write(study, rows))


@pytest.mark.parametrize(
    ("column", "value"),
    [
        ("pd", 2),
        ("os_event", "yes"),
        ("os_time", -1),
        ("pfs_time", "ten"),
        ("pdl1", 150),
        ("age", 200),
        ("mask_label", 0),
        ("mask_label", 1.5),
        ("simulated", "maybe"),
    ],
)
def test_bad_values_name_row_lesion_and_column(study: Path, column: str, value: object) -> None:
    rows = _manifest_rows()
    rows[2][column] = value
    with pytest.raises(DataError, match=rf"row 3 \(lesion_id 'L2'\), column '{column}': bad value"):
        load_manifest(_write(study, rows))


def test_patient_level_values_must_agree_across_lesions(study: Path) -> None:
    rows = _manifest_rows()
    rows[1]["arm"] = "ICI"  # P0 has lesions L0 and L1
    with pytest.raises(DataError, match=r"row 2 .*'arm'.*patient 'P0'.*row 1"):
        load_manifest(_write(study, rows))


def test_unknown_format_and_missing_manifest(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="not found"):
        load_manifest(tmp_path / "absent.csv")
    odd = tmp_path / "manifest.xlsx"
    odd.write_bytes(b"")
    with pytest.raises(DataError, match="unknown format"):
        load_manifest(odd)


def test_empty_manifest(tmp_path: Path) -> None:
    path = tmp_path / "m.csv"
    path.write_text("patient_id,lesion_id,cohort,image_path,mask_path\n")
    with pytest.raises(DataError, match="no rows"):
        load_manifest(path)


def test_patient_level_mismatch_message_shows_plain_values(tmp_path: Path) -> None:
    import numpy as np

    frame = pd.DataFrame({
        "patient_id": ["P1", "P1"], "lesion_id": ["L1", "L2"], "cohort": ["c", "c"],
        "image_path": ["a.nii", "a.nii"], "mask_path": ["m.nii", "m.nii"],
        "pdl1": np.array([36.5, 85.0]),
    })
    with pytest.raises(DataError, match=r"has 85\.0 here but 36\.5 in row 1") as info:
        validate_manifest(frame, tmp_path, check_files=False)
    assert "np.float64" not in str(info.value)
