"""Read CT images and lesion masks into SimpleITK, with geometry checks that name the lesion.

Supported inputs:

- images: NIfTI (``.nii``, ``.nii.gz``), NRRD, MetaImage (``.mha``/``.mhd``), a single DICOM
  file, or a folder holding a DICOM series (the series with most slices is read; SimpleITK/GDCM
  applies RescaleSlope/RescaleIntercept, so CT values are in HU);
- masks: label maps in the formats above (voxels equal to ``label``), DICOM RTSTRUCT
  (an ROI chosen by name or pattern, rasterised onto the image grid) and DICOM SEG.

Every image returned has its metadata dictionary emptied: DICOM headers (patient name, id,
birth date, ...) are never carried into the objects, files or summaries irtscope writes.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import SimpleITK as sitk

from irtscope._errors import DataError, GeometryError
from irtscope.imaging._dicom import dicom_modality, read_rtstruct_mask, read_seg_mask

if TYPE_CHECKING:
    import pandas as pd

__all__ = ["image_summary", "read_image", "read_lesion", "read_mask"]

#: Default geometry tolerance: spacing and origin may differ by this fraction of a voxel,
#: direction cosines by this absolute amount (NIfTI stores float32, DICOM decimal strings).
GEOMETRY_TOLERANCE = 1e-3

_IMAGE_SUFFIXES = (".nii", ".nii.gz", ".nrrd", ".nhdr", ".mha", ".mhd", ".dcm")


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
    label: int = 1,
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
    label : int, default 1
        Label-map value of the lesion; for a SEG with several segments, the segment number.
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
        Missing or unreadable file, unknown ROI/segment.
    GeometryError
        The mask is empty, lies (partly) outside the image, or its grid differs from the
        reference beyond :data:`GEOMETRY_TOLERANCE`.
    """
    what = f"mask {str(path)!r}"
    mask = _read_mask(Path(path), reference_image, label, roi_name, what)
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
        mapping resolve against the working directory.
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
    label = 1 if label is None else int(label)
    roi_name = _field(row, "roi_name")
    image = _read_image(Path(str(image_path)), what=f"{what}: image {str(image_path)!r}")
    mask = _read_mask(
        Path(str(mask_path)),
        image,
        label,
        None if roi_name is None else str(roi_name),
        f"{what}: mask {str(mask_path)!r}",
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
            files = max(
                (reader.GetGDCMSeriesFileNames(str(path), uid) for uid in sorted(series)),
                key=len,
            )
            reader.SetFileNames(files)
            image = reader.Execute()
        else:
            image = sitk.ReadImage(str(path))
    except DataError:
        raise
    except RuntimeError as exc:  # SimpleITK reports every read failure as RuntimeError
        reason = str(exc).strip().splitlines()[-1] if str(exc).strip() else "unreadable"
        raise DataError(f"{what}: SimpleITK cannot read it ({reason})") from exc
    return _strip_metadata(image)


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
    mask = sitk.GetImageFromArray((sitk.GetArrayViewFromImage(labels) == label).astype(np.uint8))
    mask.CopyInformation(labels)
    if not _any_voxel(mask):
        found = np.unique(sitk.GetArrayViewFromImage(labels))
        shown = ", ".join(str(v) for v in found[:10]) + (" ..." if found.size > 10 else "")
        raise GeometryError(
            f"{what}: mask is empty (no voxel has label {label}; labels present: {shown})"
        )
    return mask


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
