"""Issue 13, defect 5: damaged images are named as such, never read as valid.

Real shared data (the pyradiomics lung CT, the IBSI CT phantom as NIfTI and DICOM) is copied
into ``tmp_path`` and damaged there: cut at 50 %, a byte flipped, a slice removed.
"""

from __future__ import annotations

import gzip
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import SimpleITK as sitk

from irtscope import DataError
from irtscope.imaging import extract_features, read_image
from irtscope.imaging._io import read_lesion

DAMAGED = "truncated or corrupt image"


@pytest.fixture(scope="module")
def lung_dir(imaging_dir: Path) -> Path:
    path = imaging_dir / "pyradiomics_lung"
    if not (path / "lung1_image.nrrd").is_file():
        pytest.skip(f"pyradiomics lung CTs not found in {path}")
    return path


@pytest.fixture(scope="module")
def phantom_dir(imaging_dir: Path) -> Path:
    path = imaging_dir / "ibsi1_ct_phantom"
    if not (path / "image.nii.gz").is_file() or not (path / "dicom" / "image").is_dir():
        pytest.skip(f"IBSI CT phantom (NIfTI + DICOM) not found in {path}")
    return path


def _cut(source: Path, target: Path, fraction: float = 0.5) -> Path:
    data = source.read_bytes()
    target.write_bytes(data[: int(len(data) * fraction)])
    return target


def test_truncated_nifti_gz_is_named(phantom_dir: Path, tmp_path: Path) -> None:
    cut = _cut(phantom_dir / "image.nii.gz", tmp_path / "cut.nii.gz")
    with pytest.raises(DataError, match=DAMAGED) as info:  # read with zeros before
        read_image(cut)
    assert "cut.nii.gz" in str(info.value)


def test_truncated_nifti_is_named(phantom_dir: Path, tmp_path: Path) -> None:
    raw = tmp_path / "image.nii"
    raw.write_bytes(gzip.decompress((phantom_dir / "image.nii.gz").read_bytes()))
    assert read_image(raw).GetSize() == (204, 201, 60)  # intact file still reads
    with pytest.raises(DataError, match=DAMAGED) as info:  # read with zeros before
        read_image(_cut(raw, tmp_path / "cut.nii"))
    assert "bytes" in str(info.value)


def test_corrupt_gzip_is_named(phantom_dir: Path, tmp_path: Path) -> None:
    data = bytearray((phantom_dir / "image.nii.gz").read_bytes())
    data[len(data) // 2] ^= 0xFF
    flipped = tmp_path / "flipped.nii.gz"
    flipped.write_bytes(bytes(data))
    with pytest.raises(DataError, match=DAMAGED):
        read_image(flipped)


@pytest.mark.parametrize("compressed", [True, False])
def test_truncated_nrrd_is_named(lung_dir: Path, tmp_path: Path, compressed: bool) -> None:
    whole = tmp_path / "whole.nrrd"
    sitk.WriteImage(sitk.ReadImage(str(lung_dir / "lung1_image.nrrd")), str(whole), compressed)
    with pytest.raises(DataError, match=DAMAGED) as info:
        read_image(_cut(whole, tmp_path / "cut.nrrd"))
    assert "cut.nrrd" in str(info.value)


def _dicom_copy(phantom_dir: Path, tmp_path: Path) -> Path:
    folder = tmp_path / "dicom"
    shutil.copytree(phantom_dir / "dicom" / "image", folder)
    for path in folder.iterdir():
        path.chmod(0o644)
    return folder


def test_dicom_series_with_a_missing_slice_is_named(phantom_dir: Path, tmp_path: Path) -> None:
    folder = _dicom_copy(phantom_dir, tmp_path)
    whole = read_image(folder)
    assert whole.GetSize() == (204, 201, 60)
    spacing = whole.GetSpacing()[2]
    sorted(folder.iterdir())[30].unlink()
    with pytest.raises(DataError, match="non-uniform slice spacing") as info:  # stacked before
        read_image(folder)
    message = str(info.value)
    # the gap, and the usual spacing
    assert f"{2 * spacing:.4g} mm between" in message and f"spaced {spacing:.4g} mm" in message


def test_dicom_series_with_a_truncated_slice_is_named(phantom_dir: Path, tmp_path: Path) -> None:
    folder = _dicom_copy(phantom_dir, tmp_path)
    last = sorted(folder.iterdir())[-1]  # GDCM silently leaves an unreadable file out
    _cut(last, last)
    with pytest.raises(DataError, match=DAMAGED) as info:
        read_image(folder)
    assert last.name in str(info.value)


def test_extraction_lists_the_damaged_lesion_and_extracts_the_others(
    lung_dir: Path, tmp_path: Path
) -> None:
    image = sitk.ReadImage(str(lung_dir / "lung1_image.nrrd"))
    sitk.WriteImage(image, str(tmp_path / "ct.nii.gz"), True)
    _cut(tmp_path / "ct.nii.gz", tmp_path / "ct_cut.nii.gz")
    rows = [
        {"patient_id": "P1", "lesion_id": "GOOD", "cohort": "c",
         "image_path": str(lung_dir / "lung1_image.nrrd"),
         "mask_path": str(lung_dir / "lung1_label.nrrd")},
        {"patient_id": "P2", "lesion_id": "CUT", "cohort": "c",
         "image_path": str(tmp_path / "ct_cut.nii.gz"),
         "mask_path": str(lung_dir / "lung1_label.nrrd")},
    ]
    result = extract_features(pd.DataFrame(rows), "ibsi-a")
    assert result.features["lesion_id"].tolist() == ["GOOD"]
    error = result.failures.set_index("lesion_id")["error"]["CUT"]
    assert DAMAGED in error and "'CUT'" in error
    result.write(tmp_path / "out")
    failures = pd.read_csv(tmp_path / "out" / "failures.csv")
    assert failures["lesion_id"].tolist() == ["CUT"] and DAMAGED in failures["error"].iloc[0]


# -- a CT passed as its own mask ---------------------------------------------------------------
def test_ct_as_its_own_mask_is_rejected(lung_dir: Path) -> None:
    ct = str(lung_dir / "lung1_image.nrrd")
    row = {"lesion_id": "SELF", "image_path": ct, "mask_path": ct}
    with pytest.raises(DataError, match="not a label map") as info:  # voxels == 1 became lesion
        read_lesion(row)
    assert "lung1_image.nrrd" in str(info.value) and "mask_label" in str(info.value)
    # an explicit label says the user means it
    _, mask = read_lesion({**row, "mask_label": 1})
    assert int(np.count_nonzero(sitk.GetArrayViewFromImage(mask))) > 0


def test_float_mask_with_fractional_values_is_rejected(lung_dir: Path, tmp_path: Path) -> None:
    label = sitk.ReadImage(str(lung_dir / "lung1_label.nrrd"))
    array = sitk.GetArrayFromImage(label).astype(np.float32) * 0.75  # a probability map
    array.flat[np.flatnonzero(array)[0]] = 1.0  # one voxel equal to the default label
    probabilities = sitk.GetImageFromArray(array)
    probabilities.CopyInformation(label)
    path = tmp_path / "prob.nrrd"
    sitk.WriteImage(probabilities, str(path))
    row = {"lesion_id": "PROB", "image_path": str(lung_dir / "lung1_image.nrrd"),
           "mask_path": str(path)}
    with pytest.raises(DataError, match="not a label map"):
        read_lesion(row)
    # an integer-valued float mask (NIfTI masks are often stored as float) is fine
    whole = sitk.Cast(label, sitk.sitkFloat32)
    sitk.WriteImage(whole, str(tmp_path / "float_labels.nrrd"))
    read_lesion({**row, "mask_path": str(tmp_path / "float_labels.nrrd")})


def test_manifest_tells_an_explicit_label_from_the_default(lung_dir: Path, tmp_path: Path) -> None:
    from irtscope.imaging import load_manifest, validate_manifest

    ct = str(lung_dir / "lung1_image.nrrd")
    rows = pd.DataFrame({"patient_id": ["P1", "P2"], "lesion_id": ["DEFAULT", "GIVEN"],
                         "cohort": "c", "image_path": ct, "mask_path": ct,
                         "mask_label": [None, 1]})
    manifest = validate_manifest(rows, tmp_path)
    assert manifest["mask_label"].tolist() == [1, 1]
    assert manifest["mask_label_given"].tolist() == [False, True]
    with pytest.raises(DataError, match=r"'DEFAULT'.*not a label map"):
        read_lesion(manifest.iloc[0])
    read_lesion(manifest.iloc[1])
    # saved and loaded again, the manifest keeps its meaning
    manifest.to_csv(tmp_path / "m.csv", index=False)
    again = load_manifest(tmp_path / "m.csv")
    assert again["mask_label_given"].tolist() == [False, True]
