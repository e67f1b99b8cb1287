"""Image and mask readers: formats, RTSTRUCT/SEG rasterisation, geometry errors, identifiers."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pydicom
import pytest
import SimpleITK as sitk
from matplotlib.path import Path as MplPath
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.pixels import pack_bits
from pydicom.sequence import Sequence
from pydicom.uid import ExplicitVRLittleEndian, generate_uid

from irtscope import DataError, GeometryError
from irtscope.imaging import image_summary, load_manifest, read_image, read_lesion, read_mask
from irtscope.imaging._dicom import SEG_SOP_CLASS, fill_polygon

IBSI_GTV_VOXELS = 125_256  # voxels of the GTV mask in the IBSI 1 CT phantom (IBSI manual)


# --------------------------------------------------------------------------- helpers


def _image(
    size: tuple[int, int, int] = (12, 10, 6),
    spacing: tuple[float, float, float] = (0.8, 0.8, 2.5),
    origin: tuple[float, float, float] = (-10.0, 5.0, 30.0),
    direction: tuple[float, ...] = (1, 0, 0, 0, 1, 0, 0, 0, 1),
    array: np.ndarray | None = None,
) -> sitk.Image:
    if array is None:
        array = np.arange(np.prod(size), dtype=np.int16).reshape(size[::-1])
    image = sitk.GetImageFromArray(array)
    image.SetSpacing(spacing)
    image.SetOrigin(origin)
    image.SetDirection([float(v) for v in direction])
    return image


def _cube_mask(reference: sitk.Image, label: int = 1) -> sitk.Image:
    array = np.zeros(reference.GetSize()[::-1], dtype=np.uint8)
    array[2:4, 3:6, 4:8] = label
    mask = sitk.GetImageFromArray(array)
    mask.CopyInformation(reference)
    return mask


def _row(tmp_path: Path, image: sitk.Image, mask: sitk.Image, **extra: object) -> dict:
    image_path, mask_path = tmp_path / "image.nii.gz", tmp_path / "mask.nii.gz"
    sitk.WriteImage(image, str(image_path))
    sitk.WriteImage(mask, str(mask_path))
    return {"lesion_id": "LES-7", "image_path": str(image_path), "mask_path": str(mask_path)} | (
        extra
    )


def _write_seg(
    path: Path,
    reference: sitk.Image,
    segments: dict[int, tuple[str, np.ndarray]],
    pixel_spacing: tuple[float, float] | None = None,
) -> None:
    """Write a minimal binary DICOM SEG: one frame per non-empty slice of each segment."""
    nx, ny, _ = reference.GetSize()
    spacing = reference.GetSpacing()
    direction = np.array(reference.GetDirection()).reshape(3, 3)
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = SEG_SOP_CLASS
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID = SEG_SOP_CLASS
    ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
    ds.Modality = "SEG"
    ds.PatientName = "Seg^Test"
    ds.Rows, ds.Columns = ny, nx
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.BitsAllocated = ds.BitsStored = 1
    ds.HighBit = 0
    ds.PixelRepresentation = 0
    ds.SegmentationType = "BINARY"
    ds.SegmentSequence = Sequence()
    shared = Dataset()
    orientation = Dataset()
    orientation.ImageOrientationPatient = [*direction[:, 0], *direction[:, 1]]
    measures = Dataset()
    measures.PixelSpacing = list(pixel_spacing or (spacing[1], spacing[0]))
    measures.SliceThickness = spacing[2]
    shared.PlaneOrientationSequence = Sequence([orientation])
    shared.PixelMeasuresSequence = Sequence([measures])
    ds.SharedFunctionalGroupsSequence = Sequence([shared])
    per_frame, frames = [], []
    for number, (label, array) in segments.items():
        item = Dataset()
        item.SegmentNumber = number
        item.SegmentLabel = label
        item.SegmentAlgorithmType = "MANUAL"
        ds.SegmentSequence.append(item)
        for k in np.nonzero(array.any(axis=(1, 2)))[0]:
            group = Dataset()
            ident = Dataset()
            ident.ReferencedSegmentNumber = number
            group.SegmentIdentificationSequence = Sequence([ident])
            position = Dataset()
            position.ImagePositionPatient = list(
                reference.TransformIndexToPhysicalPoint((0, 0, int(k)))
            )
            group.PlanePositionSequence = Sequence([position])
            per_frame.append(group)
            frames.append(array[k])
    ds.PerFrameFunctionalGroupsSequence = Sequence(per_frame)
    ds.NumberOfFrames = len(frames)
    ds.PixelData = pack_bits(np.stack(frames).astype(np.uint8))
    ds["PixelData"].VR = "OB"
    ds.save_as(path, enforce_file_format=True)


@pytest.fixture(scope="module")
def phantom(imaging_dir: Path) -> Path:
    return imaging_dir / "ibsi1_ct_phantom"


# --------------------------------------------------------------------------- IBSI phantom


def test_rtstruct_and_nifti_phantom_masks_are_identical(phantom: Path) -> None:
    ct = read_image(phantom / "dicom" / "image")
    from_rtstruct = read_mask(phantom / "dicom" / "rtstruct", ct, roi_name="GTV-1")
    from_nifti = read_mask(phantom / "mask.nii.gz", ct)
    a = sitk.GetArrayFromImage(from_rtstruct)
    b = sitk.GetArrayFromImage(from_nifti)
    assert from_rtstruct.GetPixelID() == sitk.sitkUInt8
    assert set(np.unique(a)) == {0, 1}
    assert int(a.sum()) == IBSI_GTV_VOXELS
    assert int(b.sum()) == IBSI_GTV_VOXELS
    assert int((a != b).sum()) == 0


def test_dicom_series_matches_nifti_phantom_in_hu(phantom: Path) -> None:
    dicom = read_image(phantom / "dicom" / "image")
    nifti = read_image(phantom / "image.nii.gz")
    assert dicom.GetSize() == nifti.GetSize() == (204, 201, 60)
    np.testing.assert_allclose(dicom.GetSpacing(), nifti.GetSpacing(), rtol=1e-6)
    np.testing.assert_allclose(dicom.GetOrigin(), nifti.GetOrigin(), atol=1e-4)
    values = sitk.GetArrayViewFromImage(dicom)
    assert values.min() == -1000  # RescaleIntercept -1000 applied: HU, not raw storage
    np.testing.assert_array_equal(values, sitk.GetArrayViewFromImage(nifti))


def test_manifest_row_with_dicom_and_rtstruct(phantom: Path, tmp_path: Path) -> None:
    rows = [
        {
            "patient_id": "PH",
            "lesion_id": "ibsi-dicom",
            "cohort": "IBSI",
            "image_path": str(phantom / "dicom" / "image"),
            "mask_path": str(phantom / "dicom" / "rtstruct" / "DCM_RS_00060.dcm"),
            "roi_name": "gtv.*",  # pattern, case-insensitive
        },
        {
            "patient_id": "PH",
            "lesion_id": "ibsi-nifti",
            "cohort": "IBSI",
            "image_path": str(phantom / "image.nii.gz"),
            "mask_path": str(phantom / "mask.nii.gz"),
        },
    ]
    pd.DataFrame(rows).to_csv(tmp_path / "manifest.csv", index=False)
    manifest = load_manifest(tmp_path / "manifest.csv")
    masks = []
    for _, row in manifest.iterrows():
        image, mask = read_lesion(row)
        assert mask.GetSize() == image.GetSize()
        assert mask.GetOrigin() == image.GetOrigin()
        masks.append(sitk.GetArrayFromImage(mask))
    np.testing.assert_array_equal(masks[0], masks[1])


def test_rtstruct_roi_selection_errors_list_available_rois(phantom: Path) -> None:
    ct = read_image(phantom / "image.nii.gz")
    rtstruct = phantom / "dicom" / "rtstruct"
    assert sitk.GetArrayViewFromImage(read_mask(rtstruct, ct)).sum() == IBSI_GTV_VOXELS
    with pytest.raises(DataError, match=r"no ROI matches 'PTV'; available: 'GTV-1'"):
        read_mask(rtstruct, ct, roi_name="PTV")
    with pytest.raises(DataError, match="needs the reference image"):
        read_mask(rtstruct, None)


def test_rtstruct_on_a_flipped_grid_follows_the_direction_cosines(phantom: Path) -> None:
    """Same physical CT stored with the y axis reversed: the mask must flip with it."""
    ct = read_image(phantom / "image.nii.gz")
    array = sitk.GetArrayFromImage(ct)[:, ::-1, :]
    flipped = sitk.GetImageFromArray(np.ascontiguousarray(array))
    flipped.SetSpacing(ct.GetSpacing())
    flipped.SetDirection((1.0, 0.0, 0.0, 0.0, -1.0, 0.0, 0.0, 0.0, 1.0))
    flipped.SetOrigin(ct.TransformIndexToPhysicalPoint((0, ct.GetSize()[1] - 1, 0)))
    mask = read_mask(phantom / "dicom" / "rtstruct", flipped, roi_name="GTV-1")
    truth = sitk.GetArrayFromImage(read_mask(phantom / "mask.nii.gz", ct))
    np.testing.assert_array_equal(sitk.GetArrayFromImage(mask), truth[:, ::-1, :])


def test_rtstruct_inner_contour_on_the_same_slice_is_a_hole(phantom: Path, tmp_path: Path) -> None:
    ct = read_image(phantom / "image.nii.gz")
    ds = pydicom.dcmread(phantom / "dicom" / "rtstruct" / "DCM_RS_00060.dcm")
    contours = ds.ROIContourSequence[0].ContourSequence
    outer = np.asarray(contours[12].ContourData, dtype=float).reshape(-1, 3)
    centre = outer.mean(axis=0)
    half = 3.0  # a 6 mm square around the contour's centroid
    corners = [(-half, -half), (half, -half), (half, half), (-half, half)]
    hole = Dataset()
    hole.ContourGeometricType = "CLOSED_PLANAR"
    hole.NumberOfContourPoints = 4
    hole.ContourData = [
        f"{v:.6f}" for dx, dy in corners for v in (centre[0] + dx, centre[1] + dy, outer[0, 2])
    ]
    contours.append(hole)
    ds.save_as(tmp_path / "rs.dcm")
    with_hole = sitk.GetArrayFromImage(read_mask(tmp_path / "rs.dcm", ct))
    solid = sitk.GetArrayFromImage(read_mask(phantom / "mask.nii.gz", ct))
    removed = solid & ~with_hole
    assert not (with_hole & ~solid).any()
    # 6 mm / 0.977 mm: a 6 x 6 block of voxel centres, all on one slice
    assert int(removed.sum()) == 36
    assert len(np.unique(np.nonzero(removed)[0])) == 1


def _shifted_rtstruct(phantom: Path, tmp_path: Path, shift: tuple[float, float, float]) -> Path:
    ds = pydicom.dcmread(phantom / "dicom" / "rtstruct" / "DCM_RS_00060.dcm")
    contour = ds.ROIContourSequence[0].ContourSequence[0]
    points = np.asarray(contour.ContourData, dtype=float).reshape(-1, 3) + np.asarray(shift)
    contour.ContourData = [f"{v:.6f}" for v in points.ravel()]
    path = tmp_path / "rs.dcm"
    ds.save_as(path)
    return path


def test_rtstruct_contour_outside_image(phantom: Path, tmp_path: Path) -> None:
    ct = read_image(phantom / "image.nii.gz")
    path = _shifted_rtstruct(phantom, tmp_path, (400.0, 0.0, 0.0))
    with pytest.raises(GeometryError, match=r"ROI 'GTV-1' contour 1 lies outside the image"):
        read_mask(path, ct, roi_name="GTV-1")


def test_rtstruct_contour_between_slices(phantom: Path, tmp_path: Path) -> None:
    ct = read_image(phantom / "image.nii.gz")
    path = _shifted_rtstruct(phantom, tmp_path, (0.0, 0.0, 1.5))  # half of the 3 mm spacing
    with pytest.raises(GeometryError, match="between image slices"):
        read_mask(path, ct, roi_name="GTV-1")


# --------------------------------------------------------------------------- NRRD lungs


@pytest.mark.parametrize(("case", "voxels"), [("lung1", 837), ("lung2", 24_644)])
def test_nrrd_lung_cts_load_with_their_labels(imaging_dir: Path, case: str, voxels: int) -> None:
    folder = imaging_dir / "pyradiomics_lung"
    image, mask = read_lesion(
        {
            "lesion_id": case,
            "image_path": folder / f"{case}_image.nrrd",
            "mask_path": folder / f"{case}_label.nrrd",
            "mask_label": 1,
        }
    )
    assert image.GetPixelID() == sitk.sitkInt16
    assert sitk.GetArrayViewFromImage(image).min() >= -1024
    assert mask.GetPixelID() == sitk.sitkUInt8
    assert int(sitk.GetArrayViewFromImage(mask).sum()) == voxels
    summary = image_summary(image, mask)
    assert summary["mask_voxels"] == voxels
    json.dumps(summary)  # JSON-serialisable provenance


def test_label_not_present_is_an_empty_mask(imaging_dir: Path) -> None:
    folder = imaging_dir / "pyradiomics_lung"
    row = {
        "lesion_id": "lung1-wrong-label",
        "image_path": folder / "lung1_image.nrrd",
        "mask_path": folder / "lung1_label.nrrd",
        "mask_label": 2,
    }
    with pytest.raises(GeometryError, match=r"lesion 'lung1-wrong-label'.*empty.*label 2"):
        read_lesion(row)


# --------------------------------------------------------------------------- geometry errors


def test_matching_synthetic_lesion_reads(tmp_path: Path) -> None:
    image = _image()
    _, mask_out = read_lesion(_row(tmp_path, image, _cube_mask(image, label=3), mask_label=3))
    assert int(sitk.GetArrayViewFromImage(mask_out).sum()) == 2 * 3 * 4
    assert set(np.unique(sitk.GetArrayViewFromImage(mask_out))) == {0, 1}


def test_tiny_float_differences_are_tolerated_and_geometry_copied(tmp_path: Path) -> None:
    image = _image()
    mask = _cube_mask(image)
    mask.SetOrigin(tuple(v + 1e-5 for v in image.GetOrigin()))
    image_out, mask_out = read_lesion(_row(tmp_path, image, mask))
    assert mask_out.GetOrigin() == image_out.GetOrigin()


@pytest.mark.parametrize(
    ("change", "pattern"),
    [
        (
            {"spacing": (0.8, 0.8, 3.0)},
            r"spacing image \(0\.8, 0\.8, 2\.5\) vs mask \(0\.8, 0\.8, 3\)",
        ),
        ({"origin": (-10.0, 5.0, 31.0)}, r"origin image \(-10, 5, 30\) vs mask \(-10, 5, 31\)"),
        ({"direction": (1, 0, 0, 0, -1, 0, 0, 0, 1)}, r"mask voxels outside the image"),
        ({"direction": (0, 1, 0, 1, 0, 0, 0, 0, 1), "size": (12, 12, 6)}, r"direction image"),
        ({"size": (12, 11, 6)}, r"size image \(12, 10, 6\) vs mask \(12, 11, 6\)"),
    ],
)
def test_mismatched_geometry_names_lesion_and_values(
    tmp_path: Path, change: dict[str, tuple], pattern: str
) -> None:
    image = _image()
    mask = _cube_mask(_image(**change))
    with pytest.raises(GeometryError, match=rf"lesion 'LES-7'.*{pattern}"):
        read_lesion(_row(tmp_path, image, mask))


def test_mask_outside_image(tmp_path: Path) -> None:
    image = _image()
    mask = _cube_mask(_image(origin=(200.0, 5.0, 30.0)))
    with pytest.raises(GeometryError, match=r"lesion 'LES-7'.*mask voxels outside the image"):
        read_lesion(_row(tmp_path, image, mask))


def test_empty_mask(tmp_path: Path) -> None:
    image = _image()
    empty = _cube_mask(image)
    empty = sitk.Multiply(empty, 0)
    with pytest.raises(GeometryError, match=r"lesion 'LES-7'.*mask is empty"):
        read_lesion(_row(tmp_path, image, empty))


def test_missing_files_name_the_lesion(tmp_path: Path) -> None:
    row = _row(tmp_path, _image(), _cube_mask(_image()))
    with pytest.raises(DataError, match=r"lesion 'LES-7': image .*absent\.nii\.gz.*not found"):
        read_lesion(row | {"image_path": str(tmp_path / "absent.nii.gz")})
    with pytest.raises(DataError, match=r"lesion 'LES-7': mask .*absent\.nrrd.*not found"):
        read_lesion(row | {"mask_path": str(tmp_path / "absent.nrrd")})
    with pytest.raises(DataError, match="not found"):
        read_image(tmp_path / "absent.nii.gz")


def test_unreadable_file_is_a_data_error(tmp_path: Path) -> None:
    bad = tmp_path / "broken.nii.gz"
    bad.write_bytes(b"not an image")
    with pytest.raises(DataError, match="cannot read"):
        read_image(bad)
    (tmp_path / "empty_dir").mkdir()
    with pytest.raises(DataError, match="no DICOM image series"):
        read_image(tmp_path / "empty_dir")


# --------------------------------------------------------------------------- polygon fill


def test_fill_polygon_convention_and_holes() -> None:
    square = fill_polygon(np.array([0.0, 2.0, 2.0, 0.0]), np.array([0.0, 0.0, 2.0, 2.0]), (4, 4))
    # half-open: centres on the left/top edges are in, on the right/bottom edges out
    assert square.sum() == 4
    assert square[:2, :2].all()
    outer = fill_polygon(np.array([0.5, 8.5, 8.5, 0.5]), np.array([0.5, 0.5, 8.5, 8.5]), (10, 10))
    inner = fill_polygon(np.array([2.5, 5.5, 5.5, 2.5]), np.array([2.5, 2.5, 5.5, 5.5]), (10, 10))
    ring = outer ^ inner
    assert outer.sum() == 64 and inner.sum() == 9 and ring.sum() == 55
    assert not ring[3:6, 3:6].any()


def test_fill_polygon_agrees_with_matplotlib_off_the_boundary() -> None:
    rng = np.random.default_rng(7)
    yy, xx = np.mgrid[0:40, 0:50]
    centres = np.c_[xx.ravel(), yy.ravel()]
    for _ in range(20):
        n = rng.integers(3, 12)
        angles = np.sort(rng.uniform(0, 2 * np.pi, n))
        radius = rng.uniform(3, 18, n)
        xs = 25 + radius * np.cos(angles) + 0.123
        ys = 20 + radius * np.sin(angles) + 0.321
        ours = fill_polygon(xs, ys, (40, 50))
        theirs = MplPath(np.c_[xs, ys]).contains_points(centres).reshape(40, 50)
        np.testing.assert_array_equal(ours, theirs)


# --------------------------------------------------------------------------- DICOM SEG


def test_seg_round_trip(tmp_path: Path) -> None:
    reference = _image(origin=(-12.5, 40.25, -7.0))
    first = sitk.GetArrayFromImage(_cube_mask(reference))
    second = np.zeros_like(first)
    second[4, 1:3, 1:11] = 1
    path = tmp_path / "seg.dcm"
    _write_seg(path, reference, {1: ("GTV", first), 2: ("Node 1", second)})

    by_number = read_mask(path, reference, label=2)
    np.testing.assert_array_equal(sitk.GetArrayFromImage(by_number), second)
    by_name = read_mask(path, reference, roi_name="gtv")
    np.testing.assert_array_equal(sitk.GetArrayFromImage(by_name), first)
    assert by_name.GetPixelID() == sitk.sitkUInt8
    assert by_name.GetOrigin() == reference.GetOrigin()
    with pytest.raises(DataError, match="no segment number 5"):
        read_mask(path, reference, label=5)


def test_seg_from_phantom_mask_round_trip(phantom: Path, tmp_path: Path) -> None:
    ct = read_image(phantom / "image.nii.gz")
    truth = sitk.GetArrayFromImage(read_mask(phantom / "mask.nii.gz", ct))
    _write_seg(tmp_path / "seg.dcm", ct, {1: ("GTV-1", truth)})
    back = sitk.GetArrayFromImage(read_mask(tmp_path, ct))  # folder holding one SEG
    assert int(back.sum()) == IBSI_GTV_VOXELS
    np.testing.assert_array_equal(back, truth)


def test_seg_on_another_grid_is_a_geometry_error(tmp_path: Path) -> None:
    reference = _image()
    path = tmp_path / "seg.dcm"
    mask = sitk.GetArrayFromImage(_cube_mask(reference))
    _write_seg(path, reference, {1: ("GTV", mask)}, pixel_spacing=(1.0, 1.0))
    with pytest.raises(GeometryError, match="pixel spacing"):
        read_mask(path, reference)


# --------------------------------------------------------------------------- identifiers

SECRETS = {
    "PatientName": "Doe^Jane^Secretname",
    "PatientID": "ZZ-SECRET-4242",
    "PatientBirthDate": "19010203",
    "OtherPatientIDs": "ALT-ID-99117",
}


def test_outputs_carry_no_dicom_identifiers(phantom: Path, tmp_path: Path) -> None:
    series = tmp_path / "ct"
    series.mkdir()
    for source in sorted((phantom / "dicom" / "image").glob("*.dcm")):
        ds = pydicom.dcmread(source)
        for key, value in SECRETS.items():
            setattr(ds, key, value)
        ds.save_as(series / source.name)
    rtstruct = pydicom.dcmread(phantom / "dicom" / "rtstruct" / "DCM_RS_00060.dcm")
    for key, value in SECRETS.items():
        setattr(rtstruct, key, value)
    rtstruct.save_as(tmp_path / "rs.dcm")

    row = {"lesion_id": "anon-1", "image_path": series, "mask_path": tmp_path / "rs.dcm"}
    image, mask = read_lesion(row)
    single = read_image(next(series.glob("*.dcm")))  # a lone file: GDCM fills the metadata
    assert image.GetMetaDataKeys() == () and mask.GetMetaDataKeys() == ()
    assert single.GetMetaDataKeys() == ()

    out = tmp_path / "out"
    out.mkdir()
    for name, obj in (
        ("image.nrrd", image),
        ("mask.nrrd", mask),
        ("image.mha", image),
        ("image.nii.gz", image),
        ("slice.nrrd", single),
    ):
        sitk.WriteImage(obj, str(out / name))
    (out / "summary.json").write_text(json.dumps(image_summary(image, mask)))
    with pytest.raises(DataError) as excinfo:
        read_lesion(row | {"roi_name": "PTV"})
    (out / "error.txt").write_text(str(excinfo.value))

    for file in out.iterdir():
        data = file.read_bytes()
        if file.suffix == ".gz":
            data = gzip.decompress(data)
        for value in (*SECRETS.values(), "Secretname", "SECRET"):
            assert value.encode() not in data, f"{value!r} leaked into {file.name}"
