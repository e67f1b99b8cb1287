"""Radiomics feature extraction for a lesion manifest: pyradiomics, Dask fan-out, Parquet cache.

Design (why it looks like this):

* **One task per lesion.** A task reads its own image and mask, runs pyradiomics and returns a
  plain record (features *or* an error message). Tasks never write files: only the main
  process writes the cache, so two workers can never corrupt one Parquet file, and the same
  code runs on a local process pool or on a remote ``tcp://`` Dask cluster.
* **Content-addressed cache.** The key is a sha256 over the image bytes, the mask bytes, the
  mask label / ROI name and the parameter digest. A rerun skips every lesion whose key is
  already cached, so an interrupted run resumes, and changing a parameter (or an image)
  recomputes exactly the lesions it affects. Failures are not cached: a rerun retries them.
* **No silent NaN.** pyradiomics logs an error and stores NaN when a feature class fails; here
  a lesion either yields all its features or lands in :attr:`ExtractionResult.failures` with
  the reason, and the rest of the cohort still completes.
* **Threads.** Workers are single-threaded processes (``threads_per_worker=1``) with BLAS,
  OpenMP and SimpleITK capped to one thread, so ``n_workers`` is the real CPU budget.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import time
import warnings
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from irtscope._errors import DataError, GeometryError
from irtscope.imaging._params import RadiomicsParams, load_params

__all__ = [
    "ExtractionResult",
    "compute_features",
    "extract_features",
    "lesion_cache_key",
    "resample_ibsi",
]

ProgressCallback = Callable[[int, "int | None", str], None]

_ID_COLUMNS = ("lesion_id", "patient_id", "cohort")
_THREAD_ENV = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS")
_log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ExtractionResult:
    """What :func:`extract_features` returns.

    Attributes
    ----------
    features : pandas.DataFrame
        One row per successfully extracted lesion, in manifest order: ``lesion_id``,
        ``patient_id``, ``cohort``, then pyradiomics columns (``original_shape_...``).
    failures : pandas.DataFrame
        ``lesion_id`` and ``error`` for every lesion that could not be extracted.
    n_cached, n_computed : int
        Lesions served from the cache and lesions computed in this run.
    provenance : dict
        Parameter name and digest, library versions, worker count, wall time.
    """

    features: pd.DataFrame
    failures: pd.DataFrame
    n_cached: int = 0
    n_computed: int = 0
    provenance: dict[str, Any] = field(default_factory=dict)

    def write(self, out_dir: str | Path) -> Path:
        """Write ``features.parquet``, ``failures.csv`` and ``extraction.json`` to ``out_dir``."""
        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        self.features.to_parquet(out / "features.parquet", index=False)
        from irtscope.report import write_csv  # lesion ids and messages: untrusted text

        write_csv(self.failures, out / "failures.csv", index=False)
        meta = {**self.provenance, "n_cached": self.n_cached, "n_computed": self.n_computed}
        (out / "extraction.json").write_text(json.dumps(meta, indent=2, default=str))
        return out / "features.parquet"


# --------------------------------------------------------------------------- single lesion


class _DropAdvice(logging.Filter):
    """Drop pyradiomics' per-case advice that our presets trigger on purpose."""

    _ADVICE = ("GLCM is symmetrical, therefore Sum Average", "Fixed bin Count enabled!")

    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith(self._ADVICE)


def _quiet_radiomics() -> None:
    # pyradiomics logs every step at INFO/DEBUG; keep only warnings and errors, minus the two
    # advisory warnings it repeats for every lesion (IBSI B/D/E use a fixed bin number and
    # every preset enables SumAverage).
    # Records of child loggers (radiomics.glcm) skip parent-logger filters, so the filter
    # goes on the handler pyradiomics installs.
    import radiomics  # noqa: F401  (installs its stderr handler on import)

    logger = logging.getLogger("radiomics")
    logger.setLevel(logging.WARNING)
    for handler in logger.handlers:
        if not any(isinstance(f, _DropAdvice) for f in handler.filters):
            handler.addFilter(_DropAdvice())


def _as_number(value: Any) -> Any:
    """pyradiomics returns 0-d numpy arrays; turn them into Python floats."""
    if isinstance(value, np.ndarray) and value.ndim == 0:
        return float(value)
    if isinstance(value, np.generic):
        return value.item()
    return value


def compute_features(
    image: Any,
    mask: Any,
    params: str | Path | RadiomicsParams = "lung-ct",
    *,
    diagnostics: bool = False,
    lesion: str = "lesion",
) -> dict[str, Any]:
    """Run the parameters' engine (pyradiomics, or MIRP) on one image and binary mask.

    pyradiomics gets irtscope's IBSI preprocessing first (resampling, combined
    re-segmentation, bin origin); MIRP does its own and returns IBSI tag names.

    Parameters
    ----------
    image, mask : SimpleITK.Image
        Image and mask on the same grid; mask voxels equal to the parameters' ``label``
        (default 1) form the ROI.
    params : str, Path or RadiomicsParams
        Preset name, YAML path or validated parameters.
    diagnostics : bool
        Keep pyradiomics' ``diagnostics_...`` entries (sizes, spacing, voxel counts). They are
        provenance, not features, so extraction tables leave them out.
    lesion : str
        Name used in error messages.

    Returns
    -------
    dict
        Feature name -> float (plus diagnostics when asked for).

    Raises
    ------
    GeometryError
        The mask is empty or does not share the image's grid.
    DataError
        pyradiomics rejected the case (e.g. ROI too small after re-segmentation).
    """
    import SimpleITK as sitk

    _quiet_radiomics()
    settings = load_params(params)
    label = settings.setting.label or 1
    _check_geometry(image, mask, lesion, settings)
    if not np.any(sitk.GetArrayViewFromImage(mask) == label):
        raise GeometryError(f"{lesion}: the mask has no voxel with label {label} (empty ROI)")
    before = _stage_diagnostics(image, mask, label, "original") if diagnostics else {}
    if settings.engine == "mirp":
        # MIRP interpolates and re-segments itself (the IBSI way); names are IBSI tags
        from irtscope.imaging._mirp_engine import compute_features_mirp

        return {**before, **compute_features_mirp(image, mask, settings, lesion=lesion)}
    interpolation = settings.irtscope.interpolation
    if interpolation is not None:
        image, mask = resample_ibsi(image, mask, interpolation, label=label)
        if not np.any(sitk.GetArrayViewFromImage(mask) == label):
            raise GeometryError(f"{lesion}: the ROI vanished when resampling the mask")
    settings, bin_origin = _ibsi_steps(image, mask, label, settings)
    extractor = _new_extractor(settings, bin_origin)
    try:
        raw = extractor.execute(image, mask, label=label)
    except Exception as exc:  # pyradiomics raises bare ValueError/RuntimeError/... for bad cases
        raise DataError(f"{lesion}: pyradiomics failed: {type(exc).__name__}: {exc}") from exc
    out: dict[str, Any] = {}
    if diagnostics:
        out.update(_merge_diagnostics(raw, before, image, mask, label, interpolation is not None))
    for name, value in raw.items():
        if name.startswith("diagnostics_"):
            continue
        number = float(_as_number(value))
        if not math.isfinite(number):
            # pyradiomics' base class turns a crashing feature into NaN; we refuse to.
            raise DataError(f"{lesion}: feature {name} is not finite ({number})")
        out[name] = number
    return out


def _ibsi_steps(
    image: Any, mask: Any, label: int, params: RadiomicsParams
) -> tuple[RadiomicsParams, float | None]:
    """irtscope's IBSI steps in front of pyradiomics (see ``_radiomics_preprocess``).

    Returns the parameters with ``irtscope.resegmentation`` turned into this lesion's absolute
    ``resegmentRange`` and, for ``bin_origin: ibsi`` with a fixed bin size, IBSI's bin origin.
    """
    import SimpleITK as sitk

    from irtscope.imaging._radiomics_preprocess import ibsi_bin_origin, resegmentation_window

    reseg = params.irtscope.resegmentation
    wants_origin = params.irtscope.bin_origin == "ibsi" and params.setting.bin_width is not None
    if reseg is None and not wants_origin:
        return params, None
    values = sitk.GetArrayViewFromImage(image)[sitk.GetArrayViewFromImage(mask) == label]
    configured = params
    if reseg is not None:
        lower, upper = resegmentation_window(values, reseg)
        keep = np.ones(values.shape, dtype=bool)
        if lower is not None:
            keep &= values >= lower
        if upper is not None:
            keep &= values <= upper
        values = values[keep]
        if not values.size:
            raise DataError("re-segmentation left no ROI voxel")
        # pyradiomics needs a lower bound; below the ROI minimum it removes nothing
        bounds = [float(lower) if lower is not None else float(values.min()) - 1.0]
        if upper is not None:
            bounds.append(float(upper))
        done = params.irtscope.model_copy(update={"resegmentation": None})
        params = params.model_copy(update={"irtscope": done}).with_settings(
            resegmentRange=bounds, resegmentMode="absolute"
        )
    origin = ibsi_bin_origin(configured, values) if wants_origin else None
    return params, origin


def _new_extractor(params: RadiomicsParams, bin_origin: float | None = None) -> Any:
    """A pyradiomics extractor for validated parameters (IBSI bin origin when one is given).

    pyradiomics validates the dict again with pykwalify, which loads its extensions through the
    deprecated ``SourceFileLoader.load_module``; that DeprecationWarning is pykwalify's, fires
    on every lesion and is silenced here only.
    """
    from radiomics import featureextractor

    with warnings.catch_warnings():
        warnings.filterwarnings(
            "ignore",
            message=r"the load_module\(\) method is deprecated",
            category=DeprecationWarning,
        )
        if bin_origin is not None:
            from irtscope.imaging._radiomics_preprocess import IbsiBinningExtractor

            return IbsiBinningExtractor(params.to_pyradiomics(), bin_origin)
        return featureextractor.RadiomicsFeatureExtractor(params.to_pyradiomics())


def _stage_diagnostics(image: Any, mask: Any, label: int, stage: str) -> dict[str, Any]:
    """IBSI's per-stage image and ROI descriptors (sizes, bounding box, intensities)."""
    import SimpleITK as sitk

    pixels = sitk.GetArrayViewFromImage(image)
    roi = sitk.GetArrayViewFromImage(mask) == label
    stats = sitk.LabelShapeStatisticsImageFilter()
    stats.Execute(sitk.Cast(mask, sitk.sitkUInt8))
    inside = pixels[roi]
    d = "diagnostics_"
    return {
        f"{d}Image-{stage}_Size": image.GetSize(),
        f"{d}Image-{stage}_Spacing": image.GetSpacing(),
        f"{d}Image-{stage}_Mean": float(pixels.mean()),
        f"{d}Image-{stage}_Minimum": float(pixels.min()),
        f"{d}Image-{stage}_Maximum": float(pixels.max()),
        f"{d}Mask-{stage}_Size": mask.GetSize(),
        f"{d}Mask-{stage}_BoundingBox": stats.GetBoundingBox(label) if inside.size else None,
        f"{d}Mask-{stage}_VoxelNum": int(inside.size),
        f"{d}Mask-{stage}_Mean": float(inside.mean()) if inside.size else None,
        f"{d}Mask-{stage}_Minimum": float(inside.min()) if inside.size else None,
        f"{d}Mask-{stage}_Maximum": float(inside.max()) if inside.size else None,
    }


def _merge_diagnostics(
    raw: Mapping[str, Any],
    before: Mapping[str, Any],
    image: Any,
    mask: Any,
    label: int,
    resampled_here: bool,
) -> dict[str, Any]:
    """pyradiomics' diagnostics, relabelled when irtscope resampled, completed with ours."""
    out: dict[str, Any] = {}
    for name, value in raw.items():
        if not name.startswith("diagnostics_"):
            continue
        if resampled_here:  # pyradiomics saw our interpolated image as its "original"
            name = name.replace("Image-original_", "Image-interpolated_").replace(
                "Mask-original_", "Mask-interpolated_"
            )
        out[name] = _as_number(value)
    for name, value in before.items():
        out.setdefault(name, value)
    if resampled_here or "diagnostics_Image-interpolated_Size" not in out:
        # What pyradiomics saw is the interpolated image: ours, or the initial image when
        # nothing was resampled (IBSI: then the interpolated image is the initial image).
        for name, value in _stage_diagnostics(image, mask, label, "interpolated").items():
            out.setdefault(name, value)
    return out


def resample_ibsi(image: Any, mask: Any, interpolation: Any, *, label: int = 1) -> tuple[Any, Any]:
    """Resample image and mask the IBSI 1 way (centred grid, interpolated mask, rounding).

    Parameters
    ----------
    image, mask : SimpleITK.Image
        Image and mask on the same grid.
    interpolation : Interpolation
        Target spacing (0 keeps an axis), interpolators, mask threshold, rounding.
    label : int
        Mask value of the ROI; the returned mask is 0/``label``.

    Returns
    -------
    tuple of SimpleITK.Image
        The resampled image (float64) and mask (UInt8).

    Notes
    -----
    IBSI 1 section 2.4 ("align grid centres"): the new grid has
    ``n_b = ceil(n_a * s_a / s_b)`` voxels per axis and its origin moves by
    ``(s_a * (n_a - 1) - s_b * (n_b - 1)) / 2`` along that axis, so the old and new grids share
    their centre. Points just outside the old grid use nearest-neighbour extrapolation.
    """
    import SimpleITK as sitk

    old_spacing = np.array(image.GetSpacing(), dtype=float)
    old_size = np.array(image.GetSize(), dtype=float)
    wanted = np.array(interpolation.spacing, dtype=float)
    new_spacing = np.where(wanted > 0, wanted, old_spacing)
    new_size = np.ceil(np.round(old_size * old_spacing / new_spacing, 6)).astype(int)
    shift = (old_spacing * (old_size - 1) - new_spacing * (new_size - 1)) / 2.0
    direction = np.array(image.GetDirection(), dtype=float).reshape(3, 3)
    new_origin = np.array(image.GetOrigin(), dtype=float) + direction @ shift

    def resample(source: Any, interpolator: int) -> Any:
        return sitk.Resample(
            source,
            [int(v) for v in new_size],
            sitk.Transform(),
            interpolator,
            [float(v) for v in new_origin],
            [float(v) for v in new_spacing],
            image.GetDirection(),
            0.0,
            sitk.sitkFloat64,
            True,  # useNearestNeighborExtrapolator
        )

    kinds = {
        "linear": sitk.sitkLinear,
        "bspline": sitk.sitkBSpline,
        "nearest": sitk.sitkNearestNeighbor,
    }
    new_image = resample(
        sitk.Cast(image, sitk.sitkFloat64), kinds[interpolation.image_interpolator]
    )
    if interpolation.round_intensities:
        new_image = sitk.Round(new_image)
    roi = sitk.Cast(mask == label, sitk.sitkFloat64)
    fraction = resample(roi, kinds[interpolation.mask_interpolator])
    new_mask = sitk.Cast(fraction >= interpolation.mask_threshold, sitk.sitkUInt8) * label
    return new_image, sitk.Cast(new_mask, sitk.sitkUInt8)


def _check_geometry(image: Any, mask: Any, lesion: str, params: RadiomicsParams) -> None:
    tol = params.setting.geometry_tolerance or 1e-3
    if image.GetSize() != mask.GetSize():
        raise GeometryError(
            f"{lesion}: image size {image.GetSize()} != mask size {mask.GetSize()}; "
            "resample the mask onto the image grid"
        )
    for what, a, b in (
        ("spacing", image.GetSpacing(), mask.GetSpacing()),
        ("origin", image.GetOrigin(), mask.GetOrigin()),
        ("direction", image.GetDirection(), mask.GetDirection()),
    ):
        if not np.allclose(a, b, atol=tol, rtol=0):
            raise GeometryError(
                f"{lesion}: image {what} {tuple(round(v, 4) for v in a)} != mask {what} "
                f"{tuple(round(v, 4) for v in b)}; the mask was drawn on another grid"
            )


def _read_row(row: Mapping[str, Any]) -> tuple[Any, Any]:
    """Image and 0/1 mask for one manifest row, via the shared reader when it is available."""
    try:
        from irtscope.imaging._io import read_lesion
    except ImportError:  # pragma: no cover - only before imaging/_io.py existed
        read_lesion = None
    if read_lesion is not None:
        return read_lesion(row)
    import SimpleITK as sitk

    lesion = _who(row)
    for key in ("image_path", "mask_path"):
        if not Path(str(row[key])).exists():
            raise DataError(f"{lesion}: {key} {row[key]!r} does not exist")
    image = sitk.ReadImage(str(row["image_path"]))
    mask = sitk.ReadImage(str(row["mask_path"]))
    label = _label_of(row)
    return image, sitk.Cast(mask == label, sitk.sitkUInt8)


def _who(row: Mapping[str, Any]) -> str:
    """How failure messages name a lesion: ``lesion 'ID'``, as the image reader does."""
    return f"lesion {str(row.get('lesion_id', '?'))!r}"


def _label_of(row: Mapping[str, Any]) -> int:
    value = row.get("mask_label")
    if value is None or (isinstance(value, float) and math.isnan(value)) or value is pd.NA:
        return 1
    return int(value)


# --------------------------------------------------------------------------- cache keys


def _hash_path(digest: Any, path: Path) -> None:
    files = sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
    for file in files:
        digest.update(file.name.encode())
        with file.open("rb") as handle:
            for chunk in iter(lambda: handle.read(1 << 20), b""):
                digest.update(chunk)


def lesion_cache_key(row: Mapping[str, Any], params: RadiomicsParams) -> str:
    """sha256 of image bytes + mask bytes + mask label/ROI name + parameter digest.

    Content, not paths or timestamps, so a copied or re-downloaded cohort still hits the
    cache, and an edited mask misses it.

    Raises
    ------
    DataError
        The image or mask path does not exist.
    """
    digest = hashlib.sha256()
    lesion = _who(row)
    for key in ("image_path", "mask_path"):
        path = Path(str(row.get(key, "")))
        if not str(row.get(key) or "") or not path.exists():
            raise DataError(f"{lesion}: {key} {row.get(key)!r} does not exist")
        digest.update(key.encode())
        _hash_path(digest, path)
    digest.update(f"label={_label_of(row)};roi={row.get('roi_name') or ''}".encode())
    digest.update(params.digest.encode())
    return digest.hexdigest()


def _cache_file(cache_dir: Path, key: str) -> Path:
    return cache_dir / key[:2] / f"{key}.parquet"


def _write_cache(cache_dir: Path, key: str, features: Mapping[str, float]) -> None:
    path = _cache_file(cache_dir, key)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(f".{os.getpid()}.tmp")
    pd.DataFrame([dict(features)]).to_parquet(tmp, index=False)
    tmp.replace(path)  # atomic: an interrupted run never leaves half a cache file


def _read_cache(cache_dir: Path, key: str) -> dict[str, float] | None:
    path = _cache_file(cache_dir, key)
    if not path.is_file():
        return None
    try:
        frame = pd.read_parquet(path)
    except Exception:  # a corrupt cache entry is recomputed, never trusted
        return None
    return frame.iloc[0].to_dict() if len(frame) == 1 else None


# --------------------------------------------------------------------------- tasks


def _extract_task(row: dict[str, Any], params: dict[str, Any], key: str) -> dict[str, Any]:
    """Worker side: one lesion -> a record. Must stay importable at module level (pickling)."""
    import SimpleITK as sitk
    from threadpoolctl import threadpool_limits

    for name in _THREAD_ENV:
        os.environ[name] = "1"
    sitk.ProcessObject_SetGlobalDefaultNumberOfThreads(1)
    lesion = str(row.get("lesion_id"))
    who = _who(row)
    start = time.perf_counter()
    try:
        with threadpool_limits(limits=1):
            image, mask = _read_row(row)
            settings = load_params(params)
            if (settings.setting.label or 1) != 1:
                # the reader already picked mask_label/roi_name and returns a 0/1 mask
                settings = settings.with_settings(label=1)
            features = compute_features(image, mask, settings, lesion=who)
        return {
            "lesion_id": lesion,
            "key": key,
            "features": features,
            "error": None,
            "seconds": time.perf_counter() - start,
        }
    except Exception as exc:  # every failure becomes a reported record, never a lost task
        message = str(exc) if who in str(exc) else f"{who}: {exc}"
        return {
            "lesion_id": lesion,
            "key": key,
            "features": None,
            "error": f"{type(exc).__name__}: {message}",
            "seconds": time.perf_counter() - start,
        }


def _run_serial(
    jobs: list[tuple[dict[str, Any], str]], params: dict[str, Any]
) -> Iterable[dict[str, Any]]:
    for row, key in jobs:
        yield _extract_task(row, params, key)


def _run_dask(
    jobs: list[tuple[dict[str, Any], str]],
    params: dict[str, Any],
    n_workers: int,
    scheduler: str | None,
) -> Iterable[dict[str, Any]]:
    import dask
    from distributed import Client, LocalCluster, as_completed

    if scheduler:
        client = Client(scheduler)
        cluster = None
    else:
        env = {name: "1" for name in _THREAD_ENV}
        with dask.config.set({"distributed.nanny.pre-spawn-environ": env}):
            cluster = LocalCluster(
                n_workers=n_workers,
                threads_per_worker=1,
                processes=True,
                # a free local port: the HTTP server starts even without a dashboard and the
                # default 8787 may belong to someone else's cluster
                dashboard_address="127.0.0.1:0",
                silence_logs=logging.WARNING,
            )
        client = Client(cluster)
    try:
        # One Dask key per manifest row: two lesions with identical content share a cache key
        # but must stay two tasks (Dask would merge equal keys into one computation).
        lesion_of = {}
        futures = []
        for index, (row, key) in enumerate(jobs):
            task_key = f"radiomics-{index}-{key[:16]}"
            lesion_of[task_key] = str(row["lesion_id"])
            futures.append(client.submit(_extract_task, row, params, key, key=task_key, pure=False))
        for future in as_completed(futures):
            try:
                yield future.result()
            except Exception as exc:  # worker died (e.g. out of memory): report, continue
                yield {
                    "lesion_id": lesion_of.get(str(future.key), str(future.key)),
                    "key": None,
                    "features": None,
                    "error": f"{type(exc).__name__}: worker failed: {exc}",
                    "seconds": 0.0,
                }
    finally:
        client.close()
        if cluster is not None:
            cluster.close()


# --------------------------------------------------------------------------- public entry


def extract_features(
    manifest: pd.DataFrame,
    params: str | Path | RadiomicsParams = "lung-ct",
    n_workers: int = 1,
    scheduler: str | None = None,
    cache_dir: str | Path | None = None,
    progress: ProgressCallback | None = None,
) -> ExtractionResult:
    """Extract radiomics features for every lesion of a manifest.

    Parameters
    ----------
    manifest : pandas.DataFrame
        Validated lesion manifest (:func:`~irtscope.imaging.load_manifest`): ``lesion_id``,
        ``patient_id``, ``cohort``, ``image_path``, ``mask_path`` and optionally
        ``mask_label`` / ``roi_name``.
    params : str, Path or RadiomicsParams
        Preset name (``"lung-ct"``, ``"ibsi-a"``, ...) or pyradiomics parameter YAML.
    n_workers : int
        Worker processes. ``1`` without a scheduler runs in this process (no Dask start-up
        cost); ``> 1`` starts a local Dask cluster of single-threaded processes.
    scheduler : str, optional
        Address of an existing Dask scheduler (``tcp://host:8786``); the workers there must
        have irtscope installed and see the image paths.
    cache_dir : str or Path, optional
        Folder of the Parquet cache. ``None`` disables caching.
    progress : callable, optional
        ``progress(advance, total, description)``, called once per finished lesion.

    Returns
    -------
    ExtractionResult
        Features of the lesions that succeeded and a failures table for the rest.

    Raises
    ------
    ConfigError
        Invalid parameters.
    DataError
        The manifest lacks required columns or repeats a ``lesion_id``.
    """
    started = time.perf_counter()
    settings = load_params(params)
    missing = {"lesion_id", "image_path", "mask_path"} - set(manifest.columns)
    if missing:
        raise DataError(f"manifest lacks column(s) {sorted(missing)}; see load_manifest")
    if manifest["lesion_id"].duplicated().any():
        dup = manifest.loc[manifest["lesion_id"].duplicated(), "lesion_id"].iloc[0]
        raise DataError(f"manifest repeats lesion_id {dup!r}; lesion ids must be unique")
    if n_workers < 1:
        raise DataError(f"n_workers must be >= 1, got {n_workers}")
    cache = Path(cache_dir) if cache_dir is not None else None
    total = len(manifest)
    notify = progress or (lambda advance, total=None, desc="": None)
    notify(0, total, "radiomics")

    rows = [
        {k: (None if _is_missing(v) else v) for k, v in r.items()}
        for r in manifest.to_dict(orient="records")
    ]
    results: dict[str, dict[str, Any]] = {}
    failures: list[dict[str, str]] = []
    jobs: list[tuple[dict[str, Any], str]] = []
    n_cached = n_computed = 0
    for row in rows:
        lesion = str(row["lesion_id"])
        try:
            key = lesion_cache_key(row, settings)
        except DataError as exc:
            failures.append({"lesion_id": lesion, "error": f"DataError: {exc}"})
            notify(1, None, "radiomics")
            continue
        cached = _read_cache(cache, key) if cache is not None else None
        if cached is not None:
            results[lesion] = cached
            n_cached += 1
            notify(1, None, "radiomics (cached)")
        else:
            jobs.append((row, key))
    _log.info("radiomics: %d lesions, %d cached, %d to compute", total, n_cached, len(jobs))

    pyr = settings.model_dump(by_alias=True)
    if jobs:
        runner = (
            _run_serial(jobs, pyr)
            if n_workers == 1 and scheduler is None
            else _run_dask(jobs, pyr, n_workers, scheduler)
        )
        for record in runner:
            lesion = record["lesion_id"]
            if record["error"] is None:
                n_computed += 1
                results[lesion] = record["features"]
                if cache is not None:
                    _write_cache(cache, record["key"], record["features"])
            else:
                failures.append({"lesion_id": lesion, "error": record["error"]})
                _log.info("radiomics failed: %s", record["error"])
            notify(1, None, "radiomics")

    features = _assemble(rows, results)
    failed = pd.DataFrame(failures, columns=["lesion_id", "error"])
    provenance = {
        "params": settings.name,
        "params_digest": settings.digest,
        "settings": settings.to_pyradiomics()["setting"],
        "interpolation": (
            settings.irtscope.interpolation.model_dump()
            if settings.irtscope.interpolation
            else None
        ),
        "versions": _versions(),
        "n_workers": n_workers,
        "scheduler": scheduler,
        "n_lesions": total,
        "n_failed": len(failed),
        "wall_seconds": round(time.perf_counter() - started, 3),
    }
    return ExtractionResult(features, failed, n_cached, n_computed, provenance)


def _is_missing(value: Any) -> bool:
    try:
        return bool(pd.isna(value))
    except (TypeError, ValueError):
        return False


def _assemble(
    rows: list[dict[str, Any]], results: Mapping[str, Mapping[str, float]]
) -> pd.DataFrame:
    records = []
    feature_names: list[str] = []
    seen: set[str] = set()
    for row in rows:
        lesion = str(row["lesion_id"])
        if lesion not in results:
            continue
        for name in results[lesion]:
            if name not in seen:
                seen.add(name)
                feature_names.append(name)
        ids = {c: row.get(c) for c in _ID_COLUMNS}
        ids["lesion_id"] = lesion
        records.append({**ids, **results[lesion]})
    return pd.DataFrame(records, columns=[*_ID_COLUMNS, *feature_names])


def _versions() -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    out = {}
    for package in ("irtscope", "pyradiomics-bhklab", "mirp", "SimpleITK", "numpy", "dask"):
        try:
            out[package] = version(package)
        except PackageNotFoundError:
            out[package] = "not installed"
    return out
