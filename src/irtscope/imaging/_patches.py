"""Lesion-centred 3D patches for the CNN: isotropic resampling, HU window, optional mask channel.

Why one resampling step
    The patch grid (``size`` voxels of ``spacing_mm`` on each side, centred on the mask
    centroid, oriented like the source image) is built first, and the image is resampled
    *directly onto it*. That does "resample to isotropic spacing" and "crop/pad around the
    centroid" in one pass and touches only ``size**3`` output voxels instead of resampling the
    whole CT.

Why edge padding
    A patch's field of view can overhang the scan (a lesion near the first or last slice, or
    near the edge of the simulator's cropped volumes, where on average about an eighth of a
    32 x 2 mm patch lies outside the image). Filling that with air (``pad="air"``, the old
    behaviour) draws an artificial flat black slab with a sharp boundary whose size depends on
    the scan extent, something the network can learn as a shortcut (it differs between
    cohorts) and that no real anatomy looks like. The default ``pad="edge"`` repeats the
    nearest voxel of the scan (zero-flux Neumann padding), so the overhang continues the
    adjacent tissue without a new edge. Zeros would be worse than either: water in HU.

Why a content-keyed cache
    Patch extraction is the slow, deterministic part of every fold and epoch. Cache entries are
    keyed by a SHA-256 of the image and mask *file contents* plus the patch settings and mask
    label, so an edited image or a changed setting can never return a stale patch (a path-keyed
    cache such as MONAI's ``PersistentDataset`` would).
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pandas as pd
from pydantic import BaseModel, ConfigDict, Field, model_validator

from irtscope._console import ProgressCallback
from irtscope._errors import DataError, GeometryError

__all__ = ["PatchSet", "PatchSettings", "extract_patch", "lesion_patches"]

_CACHE_VERSION = 2  # 2: edge padding outside the scan


class PatchSettings(BaseModel):
    """How a lesion becomes a network input; stored in every checkpoint.

    Parameters
    ----------
    size : int
        Edge of the cubic patch in voxels (a multiple of 8 so three 2x poolings stay integral).
    spacing_mm : float
        Isotropic voxel size after resampling; ``size * spacing_mm`` is the field of view.
    hu_min, hu_max : float
        HU window; values are clipped to it and scaled to [0, 1] so scanners with different
        offsets outside the window (air, metal) do not dominate the input range.
    include_mask : bool
        Add the lesion mask as a second channel, so the network knows *which* structure in the
        patch is the lesion (neighbouring nodules and vessels are in the field of view too).
    pad : {"edge", "air"}
        What fills the part of the field of view outside the scan: the nearest scan voxel
        (default; no artificial boundary) or air (``hu_min``). See the module docstring.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    size: int = Field(32, ge=8, le=256)
    spacing_mm: float = Field(2.0, gt=0.0, le=10.0)
    hu_min: float = -1000.0
    hu_max: float = 400.0
    include_mask: bool = True
    pad: Literal["edge", "air"] = "edge"

    @model_validator(mode="after")
    def _check(self) -> PatchSettings:
        if self.size % 8:
            raise ValueError(f"size={self.size} must be a multiple of 8")
        if self.hu_max <= self.hu_min:
            raise ValueError(f"hu_max={self.hu_max} must be above hu_min={self.hu_min}")
        return self

    @property
    def channels(self) -> int:
        return 2 if self.include_mask else 1


@dataclass(frozen=True)
class PatchSet:
    """Patches of a batch of lesions, in manifest order, and the lesions that failed.

    ``patches`` has shape ``(n_ok, channels, size, size, size)`` (float32, z-y-x order);
    ``lesion_ids`` names its rows; ``failures`` has columns ``lesion_id`` and ``error``.
    """

    patches: np.ndarray
    lesion_ids: list[str]
    failures: pd.DataFrame


def _physical_centroid(mask: Any, lesion: str) -> tuple[float, ...]:
    import SimpleITK as sitk

    stats = sitk.LabelShapeStatisticsImageFilter()
    stats.Execute(sitk.Cast(mask > 0, sitk.sitkUInt8))
    if not stats.HasLabel(1):
        raise GeometryError(f"lesion {lesion}: mask is empty, no centroid to centre the patch on")
    return stats.GetCentroid(1)


def extract_patch(image: Any, mask: Any, settings: PatchSettings, lesion: str = "?") -> np.ndarray:
    """Resample one lesion onto its isotropic patch grid and normalise it.

    Parameters
    ----------
    image, mask : SimpleITK.Image
        CT in HU and the binary lesion mask on the same grid (as ``read_lesion`` returns them).
    settings : PatchSettings
    lesion : str
        Lesion id, only used in error messages.

    Returns
    -------
    numpy.ndarray
        ``(channels, size, size, size)`` float32; channel 0 is the windowed image in [0, 1],
        channel 1 (when ``include_mask``) the resampled mask in {0, 1}.
    """
    import SimpleITK as sitk

    if image.GetDimension() != 3 or mask.GetDimension() != 3:
        raise GeometryError(f"lesion {lesion}: expected 3D image and mask")
    centre = np.asarray(_physical_centroid(mask, lesion))
    direction = np.asarray(image.GetDirection(), dtype=float).reshape(3, 3)
    half = settings.spacing_mm * (settings.size - 1) / 2.0
    origin = centre - direction @ np.full(3, half)
    size = [settings.size] * 3
    spacing = [settings.spacing_mm] * 3
    common = {
        "size": size,
        "transform": sitk.Transform(),
        "outputOrigin": origin.tolist(),
        "outputSpacing": spacing,
        "outputDirection": direction.ravel().tolist(),
    }
    source = sitk.Cast(image, sitk.sitkFloat32)
    if settings.pad == "edge":
        source = _edge_padded(source, origin, direction, settings)
    img = sitk.Resample(
        source,
        interpolator=sitk.sitkLinear,
        defaultPixelValue=float(settings.hu_min),
        outputPixelType=sitk.sitkFloat32,
        **common,
    )
    arr = sitk.GetArrayFromImage(img).astype(np.float32)
    arr = (np.clip(arr, settings.hu_min, settings.hu_max) - settings.hu_min) / (
        settings.hu_max - settings.hu_min
    )
    channels = [arr]
    if settings.include_mask:
        msk = sitk.Resample(
            sitk.Cast(mask > 0, sitk.sitkUInt8),
            interpolator=sitk.sitkNearestNeighbor,
            defaultPixelValue=0,
            outputPixelType=sitk.sitkUInt8,
            **common,
        )
        channels.append(sitk.GetArrayFromImage(msk).astype(np.float32))
    return np.stack(channels).astype(np.float32, copy=False)


def _edge_padded(
    image: Any, origin: np.ndarray, direction: np.ndarray, settings: PatchSettings
) -> Any:
    """``image`` extended by repeating its border voxels far enough to cover the patch grid.

    The patch corners are mapped to the image's continuous voxel indices; each side is padded
    by the overhang plus one voxel (linear interpolation reads a neighbour). Returns the image
    unchanged when the patch lies inside it.
    """
    import itertools

    import SimpleITK as sitk

    extent = settings.spacing_mm * (settings.size - 1)
    corners = np.array(
        [
            image.TransformPhysicalPointToContinuousIndex(
                (origin + direction @ (np.array(c) * extent)).tolist()
            )
            for c in itertools.product((0.0, 1.0), repeat=3)
        ]
    )
    size = np.array(image.GetSize(), dtype=float)
    lower = np.maximum(0, np.ceil(-corners.min(axis=0))).astype(int)
    upper = np.maximum(0, np.ceil(corners.max(axis=0) - (size - 1))).astype(int)
    if not (lower.any() or upper.any()):
        return image
    lower = np.where(lower > 0, lower + 1, 0)
    upper = np.where(upper > 0, upper + 1, 0)
    return sitk.ZeroFluxNeumannPad(image, lower.tolist(), upper.tolist())


def _hash_path(path: Path, digest: Any) -> None:
    """Feed a file, or every file of a DICOM folder in sorted order, into ``digest``."""
    files = sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
    for file in files:
        digest.update(file.name.encode())
        with file.open("rb") as handle:
            for chunk in iter(lambda: handle.read(1 << 20), b""):
                digest.update(chunk)


def _file_digest(path: Path, memo: dict[str, str]) -> str:
    """SHA-256 of a file or DICOM folder, memoised per call (a patient's lesions share a CT)."""
    key = str(path)
    if key not in memo:
        digest = hashlib.sha256()
        _hash_path(path, digest)
        memo[key] = digest.hexdigest()
    return memo[key]


def _cache_key(row: Mapping[str, Any], settings: PatchSettings, memo: dict[str, str]) -> str:
    digest = hashlib.sha256()
    for column in ("image_path", "mask_path"):
        path = Path(str(row[column]))
        if not path.exists():
            raise DataError(f"lesion {row.get('lesion_id', '?')}: {column} {path} does not exist")
        digest.update(_file_digest(path, memo).encode())
    extra = {
        "v": _CACHE_VERSION,
        "settings": settings.model_dump(),
        "mask_label": _optional(row, "mask_label"),
        "roi_name": _optional(row, "roi_name"),
    }
    digest.update(json.dumps(extra, sort_keys=True, default=str).encode())
    return digest.hexdigest()


def _optional(row: Mapping[str, Any], key: str) -> Any:
    value = row.get(key) if hasattr(row, "get") else None
    if value is None or (isinstance(value, float) and np.isnan(value)):
        return None
    return value


class _Reader:
    """Shared reader (geometry checks, DICOM/RTSTRUCT/SEG) that keeps the last CT in memory.

    Manifest rows of one patient are adjacent and point at the same CT, so reading it once per
    patient instead of once per lesion halves extraction time on multi-lesion patients.
    """

    def __init__(self) -> None:
        self._path: str | None = None
        self._image: Any = None

    def __call__(self, row: Mapping[str, Any], lesion: str) -> tuple[Any, Any]:
        from irtscope.imaging._io import read_image, read_mask

        image_path = str(row["image_path"])
        try:
            if image_path != self._path:
                self._image, self._path = read_image(image_path), image_path
            label = _optional(row, "mask_label")
            roi = _optional(row, "roi_name")
            mask = read_mask(
                str(row["mask_path"]),
                self._image,
                label=1 if label is None else int(label),
                roi_name=None if roi is None else str(roi),
            )
        except DataError as exc:
            if str(exc).startswith(f"lesion {lesion}"):
                raise
            raise type(exc)(f"lesion {lesion}: {exc}") from exc
        return self._image, mask


def lesion_patches(
    manifest: pd.DataFrame,
    settings: PatchSettings,
    cache_dir: str | Path | None = None,
    progress: ProgressCallback | None = None,
    raise_on_error: bool = True,
) -> PatchSet:
    """Extract (or load from cache) the patch of every lesion in ``manifest``.

    Parameters
    ----------
    manifest : pandas.DataFrame
        Lesion manifest rows (``lesion_id``, resolved ``image_path``/``mask_path``).
    settings : PatchSettings
    cache_dir : path, optional
        Folder for ``<sha256>.npy`` patch files; ``None`` disables caching.
    progress : callable, optional
        ``progress(advance, total, description)``.
    raise_on_error : bool
        Raise the first lesion's error (default; a model must not silently lose lesions) or
        collect failures into ``PatchSet.failures`` for batch reports.
    """
    for column in ("lesion_id", "image_path", "mask_path"):
        if column not in manifest.columns:
            raise DataError(f"manifest has no {column!r} column (needed for patch extraction)")
    cache = Path(cache_dir) if cache_dir is not None else None
    if cache is not None:
        cache.mkdir(parents=True, exist_ok=True)
    patches: list[np.ndarray] = []
    ids: list[str] = []
    failures: list[dict[str, str]] = []
    total = len(manifest)
    reader = _Reader()
    memo: dict[str, str] = {}
    for _, row in manifest.iterrows():
        lesion = str(row["lesion_id"])
        try:
            patch = _one_patch(row, settings, cache, lesion, reader, memo)
        except (DataError, OSError, RuntimeError) as exc:
            if raise_on_error:
                if isinstance(exc, DataError):
                    raise
                raise DataError(f"lesion {lesion}: patch extraction failed: {exc}") from exc
            failures.append({"lesion_id": lesion, "error": str(exc)})
        else:
            patches.append(patch)
            ids.append(lesion)
        if progress is not None:
            progress(1, total, "patches")
    shape = (0, settings.channels, *([settings.size] * 3))
    stacked = np.stack(patches) if patches else np.zeros(shape, dtype=np.float32)
    return PatchSet(stacked, ids, pd.DataFrame(failures, columns=["lesion_id", "error"]))


def _one_patch(
    row: pd.Series,
    settings: PatchSettings,
    cache: Path | None,
    lesion: str,
    reader: _Reader,
    memo: dict[str, str],
) -> np.ndarray:
    key = _cache_key(row, settings, memo) if cache is not None else ""
    target = cache / f"{key}.npy" if cache is not None else None
    if target is not None and target.exists():
        return np.load(target)
    image, mask = reader(row, lesion)
    patch = extract_patch(image, mask, settings, lesion=lesion)
    if target is not None:
        # write-then-rename: parallel folds/processes never read a half-written file
        fd, tmp = tempfile.mkstemp(dir=target.parent, suffix=".npy.tmp")
        with os.fdopen(fd, "wb") as handle:
            np.save(handle, patch)
        os.replace(tmp, target)
    return patch
