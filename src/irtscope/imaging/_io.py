"""Read CT images and lesion masks into SimpleITK, with geometry checks that name the lesion.

Supported inputs:

- images: NIfTI (``.nii``, ``.nii.gz``), NRRD, MetaImage (``.mha``/``.mhd``), a single DICOM
  file, or a folder holding a DICOM series (the series with most slices is read; SimpleITK/GDCM
  applies RescaleSlope/RescaleIntercept, so CT values are in HU);
- masks: label maps in the formats above (voxels equal to ``label``), DICOM RTSTRUCT
  (an ROI chosen by name or pattern, rasterised onto the image grid) and DICOM SEG.

Every image returned has its metadata dictionary emptied: DICOM headers (patient name, id,
birth date, ...) are never carried into the objects, files or summaries irtscope writes.

Damaged files are refused, not read with a hole: ITK reads a NIfTI file that was cut short
(or whose gzip stream is broken) without complaint and fills the missing voxels with 0, and
stacks a DICOM series with a missing slice as if it were evenly spaced. So a NIfTI file's size
is compared with what its header announces and a gzip stream is checked to its end (CRC and
length) before ITK reads it, a DICOM series is checked by :func:`~irtscope.imaging._dicom.
check_series`, and every such error says "truncated or corrupt image".

A label map must look like one: a CT (or a probability map) given as the mask would otherwise
turn every voxel equal to 1 into "the lesion". Unless the label is given explicitly, a mask
with fractional values or more than :data:`MAX_LABELS` distinct values is refused.
"""

from __future__ import annotations

import gzip
import struct
import zlib
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import SimpleITK as sitk

from irtscope._errors import DataError, GeometryError
from irtscope.imaging._dicom import (
    check_series,
    dicom_modality,
    read_rtstruct_mask,
    read_seg_mask,
)

if TYPE_CHECKING:
    import pandas as pd

__all__ = ["image_summary", "read_image", "read_lesion", "read_mask"]

#: Default geometry tolerance: spacing and origin may differ by this fraction of a voxel,
#: direction cosines by this absolute amount (NIfTI stores float32, DICOM decimal strings).
GEOMETRY_TOLERANCE = 1e-3

_IMAGE_SUFFIXES = (".nii", ".nii.gz", ".nrrd", ".nhdr", ".mha", ".mhd", ".dcm")

#: A label map with more distinct values than this (in a sample of its voxels) is taken for an
#: image, not a mask, unless the label is given explicitly.
MAX_LABELS = 16

DAMAGED = "truncated or corrupt image"


def read_image(path: str | Path) -> sitk.Image:
    """Read a CT image from a file or a DICOM series folder.

    Parameters
    ----------
    path : str or Path
        ``.nii``/``.nii.gz``/``.nrrd``/``.mha``/``.dcm`` file, or a folder of DICOM files. In a
        folder the series with the most slices wins (ties: smallest series UID), so a folder
        that also holds a scout or an RTSTRUCT still yields the CT volume.

    Returns
    -------
    SimpleITK.Image
        Pixel values as stored after rescale (HU for CT), with no metadata (so no DICOM
        identifiers).

    Raises
    ------
    DataError
        The path does not exist, holds no readable image, or SimpleITK cannot read it.
    """
    return _read_image(Path(path), what=f"image {str(path)!r}")


def read_mask(
    path: str | Path,
    reference_image: sitk.Image | None,
    label: int | None = None,
    roi_name: str | None = None,
) -> sitk.Image:
    """Read a lesion mask as a UInt8 0/1 image on the grid of ``reference_image``.

    Parameters
    ----------
    path : str or Path
        Label map (NIfTI, NRRD, MetaImage), DICOM RTSTRUCT or DICOM SEG file, or a folder holding
        exactly one RTSTRUCT/SEG file.
    reference_image : SimpleITK.Image or None
        The image the mask belongs to. RTSTRUCT contours and SEG frames are placed on its grid;
        a label map must match its geometry. May be None for label maps only (no check).
    label : int, optional
        Label-map value of the lesion; for a SEG with several segments, the segment number.
        Default 1, and then a label map must look like one (integer values, at most
        :data:`MAX_LABELS` distinct values); an explicit label accepts any scalar image.
    roi_name : str, optional
        RTSTRUCT ROI name or SEG segment label, matched exactly, then case-insensitively, then
        as a regular expression that must match the whole name (``"GTV.*"``). Needed when the
        file holds more than one ROI.

    Returns
    -------
    SimpleITK.Image
        UInt8 image with values 0 and 1.

    Raises
    ------
    DataError
        Missing, unreadable, truncated or corrupt file, unknown ROI/segment, not a label map.
    GeometryError
        The mask is empty, lies (partly) outside the image, or its grid differs from the
        reference beyond :data:`GEOMETRY_TOLERANCE`.
    """
    what = f"mask {str(path)!r}"
    explicit = label is not None
    label = 1 if label is None else int(label)
    mask = _read_mask(Path(path), reference_image, label, roi_name, what, explicit=explicit)
    if reference_image is not None:
        _check_geometry(reference_image, mask, what, GEOMETRY_TOLERANCE)
        mask.CopyInformation(reference_image)
    elif not _any_voxel(mask):
        raise GeometryError(f"{what}: mask is empty (no voxel has label {label})")
    return mask


def read_lesion(
    row: pd.Series | Mapping[str, Any], *, tolerance: float = GEOMETRY_TOLERANCE
) -> tuple[sitk.Image, sitk.Image]:
    """Read the image and binary mask of one manifest row and check they fit together.

    Parameters
    ----------
    row : pandas.Series or Mapping
        A row of :func:`~irtscope.imaging.load_manifest` (``lesion_id``, ``image_path``,
        ``mask_path``, optional ``mask_label`` and ``roi_name``). Relative paths in a raw
        mapping resolve against the working directory. The label counts as given explicitly
        when ``mask_label_given`` says so (manifest rows), or, without that column, when
        ``mask_label`` is present (raw mappings).
    tolerance : float, keyword-only
        Allowed spacing/origin difference as a fraction of a voxel, and direction-cosine
        difference.

    Returns
    -------
    image, mask : SimpleITK.Image
        The image, and a UInt8 0/1 mask with exactly the image's geometry.

    Raises
    ------
    DataError
        Missing or unreadable files, unknown ROI; the message starts with the lesion id.
    GeometryError
        Size/spacing/origin/direction mismatch (with both values), empty mask, or mask voxels
        outside the image; the message starts with the lesion id.
    """
    lesion_id = _field(row, "lesion_id")
    what = f"lesion {str(lesion_id) if lesion_id is not None else '?'!r}"
    image_path = _field(row, "image_path")
    mask_path = _field(row, "mask_path")
    if image_path is None or mask_path is None:
        raise DataError(f"{what}: row needs image_path and mask_path")
    label = _field(row, "mask_label")
    given = _field(row, "mask_label_given")
    explicit = label is not None if given is None else bool(given)
    label = 1 if label is None else int(label)
    roi_name = _field(row, "roi_name")
    image = _read_image(Path(str(image_path)), what=f"{what}: image {str(image_path)!r}")
    mask = _read_mask(
        Path(str(mask_path)),
        image,
        label,
        None if roi_name is None else str(roi_name),
        f"{what}: mask {str(mask_path)!r}",
        explicit=explicit,
    )
    _check_geometry(image, mask, what, tolerance)
    mask.CopyInformation(image)
    return image, mask


def image_summary(image: sitk.Image, mask: sitk.Image | None = None) -> dict[str, Any]:
    """Describe an image (and optionally its mask) for logs and provenance, without identifiers.

    Only geometry and pixel statistics are reported, never metadata, so the summary is safe to
    write next to features even when the image came from DICOM.

    Returns
    -------
    dict
        ``size``, ``spacing``, ``origin``, ``direction``, ``pixel_type``, ``dimension``, and
        with a mask ``mask_voxels`` and ``mask_volume_mm3``. JSON-serialisable.
    """
    summary: dict[str, Any] = {
        "dimension": image.GetDimension(),
        "size": [int(v) for v in image.GetSize()],
        "spacing": [float(v) for v in image.GetSpacing()],
        "origin": [float(v) for v in image.GetOrigin()],
        "direction": [float(v) for v in image.GetDirection()],
        "pixel_type": image.GetPixelIDTypeAsString(),
    }
    if mask is not None:
        voxels = int(np.count_nonzero(sitk.GetArrayViewFromImage(mask)))
        summary["mask_voxels"] = voxels
        summary["mask_volume_mm3"] = float(voxels * np.prod(mask.GetSpacing()))
    return summary


def _field(row: Any, name: str) -> Any:
    """``row[name]`` or None when absent or missing (NaN/None/pd.NA/empty text)."""
    try:
        value = row[name]
    except (KeyError, IndexError):
        return None
    if value is None:
        return None
    if isinstance(value, float) and np.isnan(value):
        return None
    if isinstance(value, str) and not value.strip():
        return None
    if type(value).__name__ == "NAType":
        return None
    return value


def _strip_metadata(image: sitk.Image) -> sitk.Image:
    # GDCM copies DICOM tags ("0010|0010" = PatientName, ...) into the metadata dictionary,
    # and the NRRD/MetaImage writers would write them back out: drop everything.
    for key in image.GetMetaDataKeys():
        image.EraseMetaData(key)
    return image


def _read_image(path: Path, what: str) -> sitk.Image:
    if not path.exists():
        raise DataError(f"{what}: file not found")
    try:
        if path.is_dir():
            reader = sitk.ImageSeriesReader()
            series = reader.GetGDCMSeriesIDs(str(path))
            if not series:
                raise DataError(f"{what}: folder holds no DICOM image series")
            uid, files = max(
                ((uid, reader.GetGDCMSeriesFileNames(str(path), uid)) for uid in sorted(series)),
                key=lambda item: len(item[1]),
            )
            check_series(path, list(files), uid, what)
            reader.SetFileNames(files)
            image = reader.Execute()
        else:
            _check_file_integrity(path, what)
            image = sitk.ReadImage(str(path))
    except DataError:
        raise
    except RuntimeError as exc:  # SimpleITK reports every read failure as RuntimeError
        reason = str(exc).strip().splitlines()[-1] if str(exc).strip() else "unreadable"
        if "Unable to determine ImageIO reader" in str(exc):
            raise DataError(
                f"{what}: SimpleITK cannot read it: not a recognised image format ({reason})"
            ) from exc
        # the file exists and its format is known: the data is cut short or damaged (NRRD
        # "expected N bytes but received M", MetaImage "data not read completely", ...)
        raise DataError(f"{what}: {DAMAGED} (SimpleITK cannot read it: {reason})") from exc
    return _strip_metadata(image)


def _check_file_integrity(path: Path, what: str) -> None:
    """Refuse a NIfTI file shorter than its header announces, or a broken gzip stream.

    Why: ITK's NIfTI reader fills whatever is missing with 0 and reports success, so a file
    cut at 50 % yields an image whose second half is 0 (and plausible-looking features).
    A ``.gz`` file is decompressed to its end once (discarding the output): that checks the
    gzip CRC and length, and counts the bytes the header is compared with.
    """
    name = path.name.lower()
    if not name.endswith((".nii", ".nii.gz", ".gz")):
        return
    with path.open("rb") as handle:
        compressed = handle.read(2) == b"\x1f\x8b"  # by content: the name may not tell
    header = b""
    total = 0
    try:
        if compressed:
            with gzip.open(path, "rb") as stream:
                while chunk := stream.read(1 << 20):
                    if len(header) < 540:
                        header += chunk[: 540 - len(header)]
                    total += len(chunk)
        else:
            with path.open("rb") as handle:
                header = handle.read(540)
            total = path.stat().st_size
    except (EOFError, gzip.BadGzipFile, zlib.error, OSError) as exc:
        reason = str(exc) or type(exc).__name__
        raise DataError(f"{what}: {DAMAGED} (gzip stream: {reason})") from exc
    if not name.endswith((".nii", ".nii.gz")):
        return
    expected = _nifti_expected_bytes(header)
    if expected is not None and total < expected:
        raise DataError(
            f"{what}: {DAMAGED} (the file holds {total:,} bytes"
            f"{' uncompressed' if compressed else ''}, its NIfTI header announces {expected:,})"
        )


def _nifti_expected_bytes(header: bytes) -> int | None:
    """Header offset plus voxel data size announced by a NIfTI-1/NIfTI-2 header, or None.

    None when the bytes are not a single-file NIfTI header (e.g. an Analyze/NIfTI pair whose
    voxels live in a separate ``.img``): ITK will then say what is wrong.
    """
    for order in ("<", ">"):
        if len(header) >= 348 and struct.unpack(order + "i", header[:4])[0] == 348:
            if header[344:348] != b"n+1\x00":
                return None
            dims = struct.unpack(order + "8h", header[40:56])
            bitpix = struct.unpack(order + "h", header[72:74])[0]
            offset = int(struct.unpack(order + "f", header[108:112])[0])
            break
        if len(header) >= 540 and struct.unpack(order + "i", header[:4])[0] == 540:
            if header[4:8] != b"n+2\x00":
                return None
            bitpix = struct.unpack(order + "h", header[14:16])[0]
            dims = struct.unpack(order + "8q", header[16:80])
            offset = int(struct.unpack(order + "q", header[168:176])[0])
            break
    else:
        return None
    n_dims = dims[0]
    if not 1 <= n_dims <= 7 or bitpix <= 0:
        return None
    voxels = int(np.prod([max(int(d), 1) for d in dims[1 : n_dims + 1]], dtype=np.int64))
    return max(offset, 0) + (voxels * int(bitpix) + 7) // 8


def _mask_source(path: Path, what: str) -> tuple[str, Path]:
    """Classify a mask path as ("labelmap" | "RTSTRUCT" | "SEG", file to read)."""
    if path.is_dir():
        found = [
            (modality, f)
            for f in sorted(path.iterdir())
            if f.is_file() and (modality := dicom_modality(f)) in ("RTSTRUCT", "SEG")
        ]
        if len(found) == 1:
            return found[0]
        if len(found) > 1:
            raise DataError(
                f"{what}: folder holds {len(found)} RTSTRUCT/SEG files; point to one of them"
            )
        return "labelmap", path  # e.g. a DICOM series used as a label map
    name = path.name.lower()
    if name.endswith(_IMAGE_SUFFIXES[:-1]):
        return "labelmap", path
    modality = dicom_modality(path)
    if modality in ("RTSTRUCT", "SEG"):
        return modality, path
    return "labelmap", path


def _read_mask(
    path: Path,
    reference: sitk.Image | None,
    label: int,
    roi_name: str | None,
    what: str,
    *,
    explicit: bool = True,
) -> sitk.Image:
    if not path.exists():
        raise DataError(f"{what}: file not found")
    kind, source = _mask_source(path, what)
    if kind != "labelmap" and reference is None:
        raise DataError(f"{what}: a {kind} mask needs the reference image it was drawn on")
    if kind == "RTSTRUCT":
        return read_rtstruct_mask(source, reference, roi_name, what)
    if kind == "SEG":
        return read_seg_mask(source, reference, label, roi_name, what)
    labels = _read_image(source, what)
    if labels.GetNumberOfComponentsPerPixel() != 1:
        raise DataError(
            f"{what}: label map has {labels.GetNumberOfComponentsPerPixel()} "
            "components per voxel; expected a scalar label image"
        )
    if not explicit:
        _check_label_map(labels, what)
    mask = sitk.GetImageFromArray((sitk.GetArrayViewFromImage(labels) == label).astype(np.uint8))
    mask.CopyInformation(labels)
    if not _any_voxel(mask):
        found = np.unique(sitk.GetArrayViewFromImage(labels))
        shown = ", ".join(str(v) for v in found[:10]) + (" ..." if found.size > 10 else "")
        raise GeometryError(
            f"{what}: mask is empty (no voxel has label {label}; labels present: {shown})"
        )
    return mask


def _check_label_map(labels: sitk.Image, what: str) -> None:
    """Refuse an image that is not a label map (a CT, a probability map) given as the mask.

    Distinct values are counted on an evenly strided sample of about a million voxels (a CT
    shows hundreds at once; counting all voxels of a large CT would cost seconds); fractional
    values are looked for among all non-zero voxels of a float image (a small lesion could
    fall between the sample points).
    """
    array = sitk.GetArrayViewFromImage(labels)
    flat = array.reshape(-1)
    sample = flat[:: max(1, flat.size // 1_000_000)]
    distinct = np.unique(sample)
    hint = (
        "pass the lesion's label map, or set mask_label in the manifest to use a value of "
        "this image as the lesion"
    )
    if distinct.size > MAX_LABELS:
        raise DataError(
            f"{what}: not a label map ({distinct.size} distinct values in a sample of "
            f"{sample.size:,} voxels, more than {MAX_LABELS}, from {distinct[0]:g} to "
            f"{distinct[-1]:g}: an image, not a mask?); {hint}"
        )
    if np.issubdtype(array.dtype, np.floating):
        values = flat[flat != 0]
        fractional = values[values != np.round(values)]
        if fractional.size:
            raise DataError(
                f"{what}: not a label map (float voxels with fractional values, e.g. "
                f"{float(fractional[0]):g}: a probability map?); threshold it into a label "
                f"map, or {hint.split(', or ')[1]}"
            )


def _any_voxel(mask: sitk.Image) -> bool:
    return bool(np.any(sitk.GetArrayViewFromImage(mask)))


def _check_geometry(image: sitk.Image, mask: sitk.Image, what: str, tolerance: float) -> None:
    """Raise GeometryError unless ``mask`` is non-empty, inside ``image`` and on its grid.

    Checked in this order so the message gives the most useful reason: empty mask, mask voxels
    outside the image's physical extent, then dimension/size/spacing/origin/direction.
    """
    mask_array = sitk.GetArrayViewFromImage(mask)
    if not mask_array.any():
        raise GeometryError(f"{what}: mask is empty (no lesion voxel)")
    if image.GetDimension() != mask.GetDimension():
        raise GeometryError(
            f"{what}: image is {image.GetDimension()}D but mask is {mask.GetDimension()}D"
        )
    dim = image.GetDimension()
    # Foreground bounding box corners (voxel centres) in mask index space, numpy order reversed.
    nz = np.nonzero(mask_array)
    low = [int(a.min()) for a in reversed(nz)]
    high = [int(a.max()) for a in reversed(nz)]
    corners = np.array(np.meshgrid(*[[lo, hi] for lo, hi in zip(low, high, strict=True)]))
    corners = corners.reshape(dim, -1).T
    size = np.array(image.GetSize())
    outside = []
    for corner in corners:
        point = mask.TransformContinuousIndexToPhysicalPoint([float(v) for v in corner])
        index = np.array(image.TransformPhysicalPointToContinuousIndex(point))
        if np.any(index < -0.5 - tolerance) or np.any(index > size - 0.5 + tolerance):
            outside.append(point)
    if outside:
        raise GeometryError(
            f"{what}: mask voxels outside the image (e.g. at {np.round(outside[0], 2).tolist()} "
            f"mm; image origin {_fmt(image.GetOrigin())}, size {image.GetSize()}, spacing "
            f"{_fmt(image.GetSpacing())})"
        )
    problems = []
    if image.GetSize() != mask.GetSize():
        problems.append(f"size image {image.GetSize()} vs mask {mask.GetSize()}")
    spacing = np.array(image.GetSpacing())
    if np.any(np.abs(spacing - np.array(mask.GetSpacing())) > tolerance * spacing):
        problems.append(
            f"spacing image {_fmt(image.GetSpacing())} vs mask {_fmt(mask.GetSpacing())}"
        )
    offset = np.linalg.norm(np.array(image.GetOrigin()) - np.array(mask.GetOrigin()))
    if offset > tolerance * spacing.min():
        problems.append(f"origin image {_fmt(image.GetOrigin())} vs mask {_fmt(mask.GetOrigin())}")
    if np.abs(np.array(image.GetDirection()) - np.array(mask.GetDirection())).max() > tolerance:
        problems.append(
            f"direction image {_fmt(image.GetDirection())} vs mask {_fmt(mask.GetDirection())}"
        )
    if problems:
        raise GeometryError(
            f"{what}: mask grid does not match the image ({'; '.join(problems)}); resample the "
            "mask onto the image grid"
        )


def _fmt(values: tuple[float, ...]) -> str:
    return "(" + ", ".join(f"{v:.6g}" for v in values) + ")"
