"""DICOM RTSTRUCT and SEG masks rasterised onto a CT grid.

Both objects describe a segmentation in patient coordinates (mm), not on the voxel grid of the
CT, so they are mapped here onto a *reference image* and returned as a UInt8 0/1 SimpleITK image
with that image's geometry.

RTSTRUCT contours are closed planar polygons. A voxel belongs to the ROI when its **centre** lies
inside the polygon by the even-odd rule, with the half-open convention of the classic
point-in-polygon crossing test (an edge counts for a row of centres at ``y`` when
``min(y0, y1) <= y < max(y0, y1)``; a centre counts as inside an edge crossing at ``x_c`` when
``x < x_c``). Several contours on one slice are combined by XOR, which turns an inner contour
into a hole, the usual RTSTRUCT convention. This reproduces the NIfTI mask that IBSI distribute
with their CT phantom voxel for voxel.

Only geometry, ROI names and segment labels are read; no patient attribute leaves this module.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path

import numpy as np
import pydicom
import SimpleITK as sitk

from irtscope._errors import DataError, GeometryError

__all__ = [
    "check_series",
    "dicom_modality",
    "fill_polygon",
    "read_rtstruct_mask",
    "read_seg_mask",
]

SEG_SOP_CLASS = "1.2.840.10008.5.1.4.1.1.66.4"
RTSTRUCT_SOP_CLASS = "1.2.840.10008.5.1.4.1.1.481.3"

# A contour must lie within this fraction of the slice spacing from a slice centre, and all of
# its points within _PLANAR_TOL slices of each other (it must be parallel to the CT slices).
_SLICE_TOL = 0.25
_PLANAR_TOL = 0.1
# In-plane slack (in voxels) beyond the outer voxel edges before a contour is "outside".
_EDGE_TOL = 1e-3
# Slice gaps may differ from the median gap by this fraction (DICOM positions are decimal
# strings; real scanners jitter by microns) before the series counts as non-uniform.
_SPACING_TOL = 0.01


def check_series(folder: Path, files: list[str], series_uid: str, what: str) -> None:
    """Refuse a DICOM series that GDCM would read with a hole in it.

    GDCM silently leaves out a slice file it cannot parse (e.g. cut short by a failed copy),
    and ITK then stacks the remaining slices as if they were evenly spaced (it only logs a
    "non uniform sampling" warning), so a missing slice shifts every slice after it. Checked
    from the headers only (no pixel data is read):

    - every file of ``folder`` whose header says it belongs to ``series_uid`` must be among
      ``files`` (the ones GDCM could read); one that is not is a truncated or corrupt file;
    - a file whose pixel data is shorter than Rows x Columns x BitsAllocated announces
      (uncompressed transfer syntaxes) is truncated;
    - the slice positions (ImagePositionPatient along the slice normal) must be evenly
      spaced: a gap that differs from the median by more than 1 % is named with its position
      and size (a missing slice, or a non-uniform series that needs resampling first).

    Raises
    ------
    DataError
        Naming the file, or the gap in mm.
    """
    readable = {Path(f).resolve() for f in files}
    for path in sorted(folder.iterdir()):
        if not path.is_file() or path.resolve() in readable or not _has_dicom_preamble(path):
            continue
        try:
            ds = pydicom.dcmread(path, stop_before_pixels=True, specific_tags=["SeriesInstanceUID"])
        except Exception as exc:  # pydicom raises several types for a damaged header
            raise DataError(
                f"{what}: truncated or corrupt image: DICOM file {path.name!r} is unreadable "
                f"({type(exc).__name__})"
            ) from exc
        if str(ds.get("SeriesInstanceUID", "")) == series_uid:
            raise DataError(
                f"{what}: truncated or corrupt image: DICOM file {path.name!r} of the series "
                "cannot be read (cut short or damaged), so the volume would miss a slice"
            )
    positions = []
    for name in files:
        ds = pydicom.dcmread(name, defer_size=256)
        _check_pixel_bytes(ds, Path(name), what)
        ipp, iop = ds.get("ImagePositionPatient"), ds.get("ImageOrientationPatient")
        if ipp is None or iop is None or len(iop) != 6:
            return  # not a positioned cross-sectional series: nothing to compare
        normal = np.cross(np.array(iop[:3], dtype=float), np.array(iop[3:], dtype=float))
        positions.append((float(np.dot(normal, np.array(ipp, dtype=float))), Path(name).name))
    if len(positions) < 3:
        return
    positions.sort()
    z = np.array([p for p, _ in positions])
    gaps = np.diff(z)
    typical = float(np.median(gaps))
    if typical <= 0:
        raise DataError(f"{what}: several slices share one position ({positions[0][0]:g} mm)")
    bad = np.flatnonzero(np.abs(gaps - typical) > _SPACING_TOL * typical)
    if bad.size:
        i = int(bad[0])
        raise DataError(
            f"{what}: non-uniform slice spacing: {gaps[i]:.4g} mm between slices at "
            f"{z[i]:.4g} mm ({positions[i][1]}) and {z[i + 1]:.4g} mm ({positions[i + 1][1]}), "
            f"where the series is otherwise spaced {typical:.4g} mm ({bad.size} irregular "
            "gap(s) in all); a slice is missing, or the series must be resampled to uniform "
            "spacing before it is used"
        )


def _has_dicom_preamble(path: Path) -> bool:
    try:
        with path.open("rb") as handle:
            handle.seek(128)
            return handle.read(4) == b"DICM"
    except OSError:
        return False


def _check_pixel_bytes(ds: pydicom.Dataset, path: Path, what: str) -> None:
    """An uncompressed slice whose pixel data is shorter than its header says is truncated."""
    meta = getattr(ds, "file_meta", None)
    syntax = getattr(meta, "TransferSyntaxUID", None) if meta is not None else None
    if syntax is None or getattr(syntax, "is_compressed", True) or "PixelData" not in ds:
        return
    try:
        expected = (int(ds.Rows) * int(ds.Columns) * int(ds.get("SamplesPerPixel", 1))
                    * int(ds.get("NumberOfFrames", 1) or 1) * int(ds.BitsAllocated) + 7) // 8
    except (AttributeError, TypeError, ValueError):
        return
    element = ds.get_item(0x7FE00010)  # the raw (deferred) element: length, file offset
    length = getattr(element, "length", None)
    if length is None or length == 0xFFFFFFFF:
        return
    end = getattr(element, "value_tell", None)
    size = path.stat().st_size
    if length < expected or (end is not None and end + length > size):
        raise DataError(
            f"{what}: truncated or corrupt image: DICOM file {path.name!r} holds less pixel "
            f"data than its header announces ({expected} bytes)"
        )


def dicom_modality(path: Path) -> str | None:
    """Return the DICOM Modality of ``path`` (``"RTSTRUCT"``, ``"SEG"``, ``"CT"``...), or None.

    Only the header is read (no pixel data), so probing a folder of CT slices is cheap.
    """
    try:
        ds = pydicom.dcmread(
            path, stop_before_pixels=True, specific_tags=["Modality", "SOPClassUID"]
        )
    except Exception:  # not a DICOM file (pydicom raises several types)
        return None
    sop = str(ds.get("SOPClassUID", ""))
    if sop == SEG_SOP_CLASS:
        return "SEG"
    if sop == RTSTRUCT_SOP_CLASS:
        return "RTSTRUCT"
    modality = ds.get("Modality")
    return str(modality) if modality else None


def select_name(names: Mapping[int, str], wanted: str | None, what: str, kind: str) -> int:
    """Pick one ROI/segment number by name: exact, then case-insensitive, then regex.

    ``wanted`` is first compared literally (so names with regex characters such as
    ``"GTV (1)"`` work), then as a case-insensitive regular expression that must match the
    whole name (``"gtv.*"``). ``None`` selects the only entry when there is exactly one.
    """
    listing = ", ".join(repr(n) for n in names.values()) or "none"
    if wanted is None:
        if len(names) == 1:
            return next(iter(names))
        raise DataError(
            f"{what}: holds {len(names)} {kind}s ({listing}); give roi_name to choose one"
        )
    for match in (
        lambda n: n == wanted,
        lambda n: n.casefold() == wanted.casefold(),
    ):
        hits = [k for k, n in names.items() if match(n)]
        if len(hits) == 1:
            return hits[0]
        if len(hits) > 1:
            raise DataError(f"{what}: {len(hits)} {kind}s are named {wanted!r}; rename one")
    try:
        pattern = re.compile(wanted, re.IGNORECASE)
    except re.error:
        pattern = None
    hits = [k for k, n in names.items() if pattern is not None and pattern.fullmatch(n)]
    if len(hits) == 1:
        return hits[0]
    if len(hits) > 1:
        matched = ", ".join(repr(names[k]) for k in hits)
        raise DataError(
            f"{what}: pattern {wanted!r} matches several {kind}s ({matched}); make it specific"
        )
    raise DataError(f"{what}: no {kind} matches {wanted!r}; available: {listing}")


def fill_polygon(xs: np.ndarray, ys: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """Rasterise one closed polygon onto integer pixel centres by the even-odd rule.

    Parameters
    ----------
    xs, ys : numpy.ndarray
        Vertex coordinates in continuous *index* units (column, row); the polygon is closed
        implicitly (last vertex joins the first).
    shape : tuple of int
        ``(rows, columns)`` of the output.

    Returns
    -------
    numpy.ndarray
        Boolean array of ``shape``; True where the pixel centre is inside.

    Notes
    -----
    A scanline version of the crossing-number test: for each row of centres, the edges it
    crosses are found in one vectorised step and each crossing toggles every centre to its
    left. Edges are half-open in ``y`` and centres exactly on a crossing count as outside
    (``x < x_c``), so shared edges of adjacent polygons are never filled twice.
    """
    ny, nx = shape
    x0 = np.asarray(xs, dtype=float)
    y0 = np.asarray(ys, dtype=float)
    x1 = np.roll(x0, -1)
    y1 = np.roll(y0, -1)
    lo = np.minimum(y0, y1)
    hi = np.maximum(y0, y1)
    # Rows j (centres at y = j) crossed by each edge: lo <= j < hi.
    j_start = np.clip(np.ceil(lo), 0, ny).astype(np.int64)
    j_stop = np.clip(np.ceil(hi), 0, ny).astype(np.int64)
    counts = j_stop - j_start
    keep = counts > 0
    if not keep.any():
        return np.zeros(shape, dtype=bool)
    edge = np.repeat(np.nonzero(keep)[0], counts[keep])
    offsets = np.arange(edge.size) - np.repeat(np.cumsum(counts[keep]) - counts[keep], counts[keep])
    rows = j_start[edge] + offsets
    t = (rows - y0[edge]) / (y1[edge] - y0[edge])
    x_cross = x0[edge] + t * (x1[edge] - x0[edge])
    # Centre i is toggled when i < x_cross, i.e. i < ceil(x_cross).
    first_outside = np.clip(np.ceil(x_cross), 0, nx).astype(np.int64)
    hits = np.zeros((ny, nx + 1), dtype=np.int64)
    np.add.at(hits, (rows, first_outside), 1)
    # toggles(i) = number of crossings with first_outside > i = suffix sum from i + 1.
    suffix = np.cumsum(hits[:, ::-1], axis=1)[:, ::-1]
    return (suffix[:, 1:] % 2).astype(bool)


def _index_transform(reference: sitk.Image) -> tuple[np.ndarray, np.ndarray]:
    """Matrix and origin mapping physical points (mm) to continuous indices of ``reference``.

    Same maths as ``TransformPhysicalPointToContinuousIndex``, vectorised over many points.
    """
    dim = reference.GetDimension()
    direction = np.array(reference.GetDirection(), dtype=float).reshape(dim, dim)
    spacing = np.array(reference.GetSpacing(), dtype=float)
    to_index = np.linalg.inv(direction @ np.diag(spacing))
    return to_index, np.array(reference.GetOrigin(), dtype=float)


def _empty_like(reference: sitk.Image, array: np.ndarray) -> sitk.Image:
    mask = sitk.GetImageFromArray(array.astype(np.uint8))
    mask.CopyInformation(reference)
    return mask


def _require_3d(reference: sitk.Image, what: str) -> None:
    if reference.GetDimension() != 3:
        raise GeometryError(
            f"{what}: DICOM masks need a 3D reference image, got {reference.GetDimension()}D"
        )


def read_rtstruct_mask(
    path: Path, reference: sitk.Image, roi_name: str | None, what: str
) -> sitk.Image:
    """Rasterise one ROI of an RTSTRUCT file onto the grid of ``reference``.

    Parameters
    ----------
    path : Path
        The RTSTRUCT file.
    reference : SimpleITK.Image
        3D image (normally the CT the structures were drawn on) whose grid the mask takes.
    roi_name : str or None
        ROI name, or a regular expression matching exactly one ROI name (case-insensitive);
        None when the file holds a single ROI.
    what : str
        How errors name the mask (lesion id or path).

    Raises
    ------
    DataError
        Unreadable file, unknown or ambiguous ROI, ROI without closed contours.
    GeometryError
        A contour is oblique to the CT slices, between slices or outside the image.
    """
    _require_3d(reference, what)
    try:
        ds = pydicom.dcmread(path)
    except Exception as exc:
        raise DataError(f"{what}: cannot read RTSTRUCT {str(path)!r}: {exc}") from exc
    names = {int(r.ROINumber): str(r.ROIName) for r in ds.get("StructureSetROISequence", [])}
    number = select_name(names, roi_name, f"{what} (RTSTRUCT {path.name})", "ROI")
    label = names[number]
    contours = []
    for roi in ds.get("ROIContourSequence", []):
        if int(roi.ReferencedROINumber) == number:
            contours.extend(roi.get("ContourSequence", []))
    to_index, origin = _index_transform(reference)
    nx, ny, nz = reference.GetSize()
    mask = np.zeros((nz, ny, nx), dtype=bool)
    n_closed = 0
    for c_no, contour in enumerate(contours, start=1):
        if str(contour.get("ContourGeometricType", "CLOSED_PLANAR")) != "CLOSED_PLANAR":
            continue  # POINT/OPEN_PLANAR contours enclose no volume
        points = np.asarray(contour.ContourData, dtype=float).reshape(-1, 3)
        if len(points) < 3:
            continue
        n_closed += 1
        index = (points - origin) @ to_index.T
        k = index[:, 2]
        here = f"{what}: ROI {label!r} contour {c_no}"
        if np.ptp(k) > _PLANAR_TOL:
            raise GeometryError(
                f"{here} is not parallel to the image slices (spans slice index "
                f"{k.min():.2f}-{k.max():.2f}); resample the image to the contour plane"
            )
        k_mean = float(k.mean())
        k_slice = round(k_mean)
        if abs(k_mean - k_slice) > _SLICE_TOL:
            raise GeometryError(
                f"{here} lies between image slices (slice index {k_mean:.2f}); the RTSTRUCT "
                "was probably drawn on another CT series"
            )
        xy = index[:, :2]
        low, high = xy.min(axis=0), xy.max(axis=0)
        if (
            not 0 <= k_slice < nz
            or low[0] < -0.5 - _EDGE_TOL
            or low[1] < -0.5 - _EDGE_TOL
            or high[0] > nx - 0.5 + _EDGE_TOL
            or high[1] > ny - 0.5 + _EDGE_TOL
        ):
            raise GeometryError(
                f"{here} lies outside the image (index x {low[0]:.1f}..{high[0]:.1f}, "
                f"y {low[1]:.1f}..{high[1]:.1f}, slice {k_mean:.1f}; image size "
                f"{(nx, ny, nz)}); mask voxels outside the image"
            )
        mask[k_slice] ^= fill_polygon(xy[:, 0], xy[:, 1], (ny, nx))
    if n_closed == 0:
        raise GeometryError(f"{what}: ROI {label!r} has no closed contours (empty mask)")
    return _empty_like(reference, mask)


def _frame_item(ds: pydicom.Dataset, frame: int, sequence: str) -> pydicom.Dataset | None:
    """Functional group ``sequence`` of one frame: per-frame value, else the shared one."""
    candidates = []
    if "PerFrameFunctionalGroupsSequence" in ds:
        candidates.append(ds.PerFrameFunctionalGroupsSequence[frame])
    if "SharedFunctionalGroupsSequence" in ds:
        candidates.append(ds.SharedFunctionalGroupsSequence[0])
    for groups in candidates:
        if sequence in groups:
            return groups[sequence][0]
    return None


def read_seg_mask(
    path: Path, reference: sitk.Image, label: int, roi_name: str | None, what: str
) -> sitk.Image:
    """Read one segment of a DICOM SEG onto the grid of ``reference``.

    Parameters
    ----------
    path : Path
        The SEG file (binary or fractional segmentation).
    reference : SimpleITK.Image
        3D image the segmentation was made on; frames must lie on its voxel grid.
    label : int
        Segment number, used when ``roi_name`` is None and the file holds several segments.
    roi_name : str or None
        Segment label (exact, or a regex matching exactly one label).
    what : str
        How errors name the mask (lesion id or path).

    Raises
    ------
    DataError
        Unreadable file, unknown segment.
    GeometryError
        Frames not aligned with the reference grid (orientation, spacing, position between
        voxels) or foreground outside the image.
    """
    _require_3d(reference, what)
    try:
        ds = pydicom.dcmread(path)
        frames = np.asarray(ds.pixel_array)
    except Exception as exc:
        raise DataError(f"{what}: cannot read DICOM SEG {str(path)!r}: {exc}") from exc
    if frames.ndim == 2:
        frames = frames[np.newaxis]
    names = {int(s.SegmentNumber): str(s.get("SegmentLabel", "")) for s in ds.SegmentSequence}
    if roi_name is None and len(names) > 1:
        if label not in names:
            raise DataError(
                f"{what}: DICOM SEG has no segment number {label}; it has {sorted(names)}"
            )
        number = label
    else:
        number = select_name(names, roi_name, f"{what} (DICOM SEG {path.name})", "segment")
    if str(ds.get("SegmentationType", "BINARY")) == "FRACTIONAL":
        threshold = float(ds.get("MaximumFractionalValue", 255)) / 2.0
        frames = frames > threshold
    else:
        frames = frames > 0

    to_index, origin = _index_transform(reference)
    direction = np.array(reference.GetDirection(), dtype=float).reshape(3, 3)
    spacing = np.array(reference.GetSpacing(), dtype=float)
    nx, ny, nz = reference.GetSize()
    mask = np.zeros((nz, ny, nx), dtype=bool)
    for f in range(frames.shape[0]):
        ident = _frame_item(ds, f, "SegmentIdentificationSequence")
        if ident is None or int(ident.ReferencedSegmentNumber) != number:
            continue
        position = _frame_item(ds, f, "PlanePositionSequence")
        orientation = _frame_item(ds, f, "PlaneOrientationSequence")
        measures = _frame_item(ds, f, "PixelMeasuresSequence")
        if position is None or orientation is None or measures is None:
            raise DataError(f"{what}: DICOM SEG frame {f + 1} lacks position/orientation/spacing")
        iop = np.asarray(orientation.ImageOrientationPatient, dtype=float)
        row_spacing, col_spacing = (float(v) for v in measures.PixelSpacing)
        here = f"{what}: DICOM SEG frame {f + 1}"
        if (
            np.abs(iop[:3] - direction[:, 0]).max() > 1e-3
            or np.abs(iop[3:] - direction[:, 1]).max() > 1e-3
        ):
            raise GeometryError(
                f"{here} orientation {iop.round(4).tolist()} differs from the image direction "
                f"{direction[:, :2].T.ravel().round(4).tolist()}"
            )
        if (
            abs(col_spacing - spacing[0]) > 1e-3 * spacing[0]
            or abs(row_spacing - spacing[1]) > 1e-3 * spacing[1]
        ):
            raise GeometryError(
                f"{here} pixel spacing {(col_spacing, row_spacing)} differs from the image "
                f"spacing {tuple(spacing[:2])}"
            )
        start = (np.asarray(position.ImagePositionPatient, dtype=float) - origin) @ to_index.T
        rounded = np.round(start)
        if np.abs(start - rounded).max() > _SLICE_TOL:
            raise GeometryError(
                f"{here} position falls between image voxels (index {start.round(2).tolist()})"
            )
        i0, j0, k = (int(v) for v in rounded)
        frame = frames[f]
        rows, cols = np.nonzero(frame)
        if rows.size == 0:
            continue
        rr, cc = rows + j0, cols + i0
        if not 0 <= k < nz or rr.min() < 0 or cc.min() < 0 or rr.max() >= ny or cc.max() >= nx:
            raise GeometryError(
                f"{here}: segment voxels outside the image (slice {k}, rows "
                f"{rr.min()}..{rr.max()}, columns {cc.min()}..{cc.max()}; image size "
                f"{(nx, ny, nz)})"
            )
        mask[k, rr, cc] = True
    return _empty_like(reference, mask)
