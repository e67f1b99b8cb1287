"""The MIRP extraction engine: the full IBSI 1 feature set with IBSI tag names.

Why a second engine: pyradiomics computes 209 of the 275 IBSI 1 reference features of a 3D CT
configuration (and about half of the 2D ones): no per-slice "2D" texture aggregation, no
distance-zone matrix, no intensity-volume histogram, no local intensity peaks, no
intensity-histogram statistics, several morphology and statistics features missing. MIRP
(Zwanenburg et al., the lead author of the IBSI reference manual) computes all of them and
passes IBSI 1; see the README for the measured conformance and speed of both engines.

The engine reads the *same* validated parameter YAML as pyradiomics (``engine: mirp``) and
translates it: ``irtscope.interpolation`` (or ``resampledPixelSpacing``) -> MIRP interpolation,
``irtscope.resegmentation`` (or ``resegmentRange``) -> MIRP re-segmentation, ``binWidth`` /
``binCount`` -> fixed bin size / number (``bin_origin: zero`` -> MIRP's pyradiomics-style fixed
bin size), ``force2D`` -> per-slice analysis, ``distances`` -> GLCM / NGLDM distance. The
optional ``mirp:`` section of the YAML passes further MIRP keyword arguments through unchanged
(e.g. the IVH discretisation an IBSI configuration prescribes). Features come back named by
their IBSI tag (``stat_mean``, ``cm_joint_avg_3D_avg``, ``szm_sze_2_5D``), so tables from this
engine line up with the IBSI reference tables without a mapping file.

MIRP reads images from files: each lesion is written to a temporary NIfTI pair (a few ms for a
lesion crop), which also keeps MIRP independent of how irtscope read the image (NIfTI, NRRD,
DICOM series + RTSTRUCT / SEG).
"""

from __future__ import annotations

import contextlib
import logging
import math
import re
import tempfile
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from irtscope._errors import ConfigError, DataError
from irtscope.imaging._params import RadiomicsParams

__all__ = ["compute_features_mirp", "mirp_settings", "mirp_tag"]

#: IBSI feature families (tag prefixes) MIRP reports; everything else in its table is metadata.
_FAMILIES = (
    "morph_",
    "loc_",
    "stat_",
    "ih_",
    "ivh_",
    "cm_",
    "rlm_",
    "szm_",
    "dzm_",
    "ngt_",
    "ngl_",
)
#: MIRP texture aggregation suffix -> IBSI tag suffix (IBSI 1 section 3.1.4).
_AGGREGATION = (
    ("_2.5d_d_mrg", "_2_5D_avg"),
    ("_2.5d_v_mrg", "_2_5D_comb"),
    ("_2d_s_mrg", "_2D_comb"),
    ("_2d_avg", "_2D_avg"),
    ("_3d_v_mrg", "_3D_comb"),
    ("_3d_avg", "_3D_avg"),
    ("_2.5d", "_2_5D"),
    ("_2d", "_2D"),
    ("_3d", "_3D"),
)
_DISCRETISATION = re.compile(r"_(fbs|fbn|fbsp|fbnp|fixed_bin_[a-z_]+)_[a-z]+[0-9.]+$")
_SPLINE_ORDER = {"nearest": 0, "linear": 1, "bspline": 3}
_SITK_ORDER = {"sitkNearestNeighbor": 0, "sitkLinear": 1, "sitkBSpline": 3}


def mirp_tag(name: str) -> str:
    """IBSI tag of a MIRP feature column (``cm_joint_avg_d1_3d_v_mrg_fbs_w25.0`` ->
    ``cm_joint_avg_3D_comb``)."""
    tag = _DISCRETISATION.sub("", name)
    tag = re.sub(r"_d[0-9.]+_a[0-9.]+_", "_", tag)  # NGLDM distance and coarseness
    tag = re.sub(r"_d[0-9.]+_", "_", tag)  # GLCM distance
    for mirp_suffix, ibsi_suffix in _AGGREGATION:
        if tag.endswith(mirp_suffix):
            return tag[: -len(mirp_suffix)] + ibsi_suffix
    return tag


def _spacing(params: RadiomicsParams, image: Any) -> tuple[list[float] | None, int, int, float]:
    """MIRP interpolation: ``(new_spacing z-y-x, image spline order, mask order, threshold)``."""
    interpolation = params.irtscope.interpolation
    if interpolation is not None:
        wanted = list(interpolation.spacing)
        order = _SPLINE_ORDER[interpolation.image_interpolator]
        mask_order = _SPLINE_ORDER[interpolation.mask_interpolator]
        threshold = interpolation.mask_threshold
    elif params.setting.resampled_pixel_spacing:
        wanted = list(params.setting.resampled_pixel_spacing)
        name = params.setting.interpolator or "sitkBSpline"
        if name not in _SITK_ORDER:
            raise ConfigError(
                f"engine mirp: interpolator {name!r} has no MIRP equivalent; use "
                f"{', '.join(_SITK_ORDER)}"
            )
        order, mask_order, threshold = _SITK_ORDER[name], 1, 0.5
    else:
        return None, 3, 1, 0.5
    old = image.GetSpacing()
    xyz = [float(w) if w > 0 else float(o) for w, o in zip(wanted, old, strict=True)]
    return [xyz[2], xyz[1], xyz[0]], order, mask_order, threshold


def _resegmentation(params: RadiomicsParams) -> dict[str, Any]:
    reseg = params.irtscope.resegmentation
    if reseg is not None:
        out: dict[str, Any] = {}
        if reseg.range is not None:
            out["resegmentation_intensity_range"] = [
                math.nan if b is None else float(b) for b in reseg.range
            ]
        if reseg.sigma is not None:
            out["resegmentation_sigma"] = float(reseg.sigma)
        return out
    rng = params.setting.resegment_range
    if rng is None:
        return {}
    mode = params.setting.resegment_mode or "absolute"
    if mode == "absolute":
        bounds = [float(rng[0]), float(rng[1]) if len(rng) > 1 else math.nan]
        return {"resegmentation_intensity_range": bounds}
    if mode == "sigma" and len(rng) == 2 and -rng[0] == rng[1]:
        return {"resegmentation_sigma": float(rng[1])}
    raise ConfigError(
        f"engine mirp: resegmentMode {mode!r} with range {list(rng)} has no MIRP equivalent; "
        "use an absolute range or a symmetric sigma range, or irtscope.resegmentation"
    )


def mirp_settings(params: RadiomicsParams, image: Any) -> dict[str, Any]:
    """MIRP keyword arguments equivalent to validated irtscope parameters for one image.

    Raises
    ------
    ConfigError
        A setting has no MIRP equivalent (e.g. relative re-segmentation, filters).
    """
    unsupported = set(params.image_type) - {"Original"}
    if unsupported:
        raise ConfigError(
            f"engine mirp: image types {sorted(unsupported)} are pyradiomics filters; "
            "use engine: pyradiomics or MIRP filter settings in the mirp section"
        )
    setting = params.setting
    by_slice = bool(setting.force_2d)
    new_spacing, order, mask_order, threshold = _spacing(params, image)
    kwargs: dict[str, Any] = {
        "by_slice": by_slice,
        "anti_aliasing": False,
        "spline_order": order,
        "roi_spline_order": mask_order,
        "roi_interpolation_mask_inclusion_threshold": threshold,
        "base_feature_families": "all",
        # MIRP approximates Moran's I and Geary's C on large ROIs (exact: O(n^2) voxel pairs,
        # 244 s instead of 35 s on the IBSI CT phantom); ``mirp: {no_approximation: true}``
        # in the YAML asks for the exact values.
        "no_approximation": False,
    }
    if new_spacing is not None:
        kwargs["new_spacing"] = new_spacing[1:] if by_slice else new_spacing
        if by_slice and new_spacing[1] == new_spacing[2]:
            kwargs["new_spacing"] = new_spacing[1]
    kwargs.update(_resegmentation(params))
    if setting.bin_count is not None:
        kwargs["base_discretisation_method"] = "fixed_bin_number"
        kwargs["base_discretisation_n_bins"] = int(setting.bin_count)
    else:
        width = float(setting.bin_width or 25.0)
        pyradiomics_like = params.irtscope.bin_origin == "zero"
        method = "fixed_bin_size_pyradiomics" if pyradiomics_like else "fixed_bin_size"
        kwargs["base_discretisation_method"] = method
        kwargs["base_discretisation_bin_width"] = width
        if pyradiomics_like:  # MIRP refuses a non-IBSI method unless told so
            kwargs["ibsi_compliant"] = False
    # pyradiomics' voxelArrayShift is added to intensities in energy / RMS; MIRP's name for it
    kwargs["stat_value_shift"] = float(setting.voxel_array_shift or 0)
    distance = float((setting.distances or (1,))[0])
    kwargs["glcm_distance"] = distance
    kwargs["ngldm_distance"] = distance
    kwargs["ngldm_difference_level"] = float(setting.gldm_a or 0)
    if by_slice:
        kwargs["glcm_spatial_method"] = [
            "2d_average",
            "2d_slice_merge",
            "2.5d_direction_merge",
            "2.5d_volume_merge",
        ]
        kwargs["glrlm_spatial_method"] = kwargs["glcm_spatial_method"]
        plain = ["2d", "2.5d"]
    else:
        kwargs["glcm_spatial_method"] = ["3d_average", "3d_volume_merge"]
        kwargs["glrlm_spatial_method"] = kwargs["glcm_spatial_method"]
        plain = ["3d"]
    for family in ("glszm", "gldzm", "ngtdm", "ngldm"):
        kwargs[f"{family}_spatial_method"] = plain
    kwargs.setdefault("ivh_discretisation_method", "none")
    kwargs.update(params.mirp)
    return kwargs


@contextlib.contextmanager
def _quiet_mirp() -> Iterator[None]:
    """Keep MIRP's INFO chatter off stdout.

    MIRP calls ``logging.basicConfig(level=INFO, stream=sys.stdout)`` and logs on the root
    logger: in a CLI that would interleave its progress lines with our tables. A handler on the
    root logger turns ``basicConfig`` into a no-op, and the root level is WARNING for the call;
    ITK's import-time SWIG deprecation warnings are ignored for the call.
    """
    root = logging.getLogger()
    handler = logging.NullHandler()
    added = not root.handlers
    if added:
        root.addHandler(handler)
    level = root.level
    root.setLevel(max(level, logging.WARNING))
    try:
        with warnings.catch_warnings():
            # ITK's SWIG modules warn on import (Python 3.12 style); MIRP loads them lazily
            # here. Turned into an error (pytest -W error) that warning crashes the
            # interpreter inside the C import, so it is ignored for this call only.
            warnings.filterwarnings(
                "ignore", message=r".*has no __module__ attribute", category=DeprecationWarning
            )
            yield
    finally:
        root.setLevel(level)
        if added:
            root.removeHandler(handler)


def compute_features_mirp(
    image: Any, mask: Any, params: RadiomicsParams, *, lesion: str = "lesion"
) -> dict[str, float]:
    """Run MIRP on one image and 0/label mask (SimpleITK images, same grid).

    Returns
    -------
    dict
        IBSI tag -> value for every feature MIRP computed (non-finite values are refused).

    Raises
    ------
    DataError
        MIRP failed on this lesion or returned no features.
    ConfigError
        A setting has no MIRP equivalent.
    """
    import SimpleITK as sitk
    from mirp import extract_features

    label = params.setting.label or 1
    kwargs = mirp_settings(params, image)
    modality = kwargs.pop("image_modality", "CT")  # CT: MIRP rounds interpolated HU (IBSI)
    with tempfile.TemporaryDirectory(prefix="irtscope-mirp-") as tmp:
        image_path, mask_path = Path(tmp) / "image.nii.gz", Path(tmp) / "mask.nii.gz"
        sitk.WriteImage(sitk.Cast(image, sitk.sitkFloat32), str(image_path))
        sitk.WriteImage(sitk.Cast(mask == label, sitk.sitkUInt8), str(mask_path))
        try:
            with _quiet_mirp():
                tables = extract_features(
                    write_features=False,
                    export_features=True,
                    image=str(image_path),
                    mask=str(mask_path),
                    image_modality=modality,
                    num_cpus=None,
                    **kwargs,
                )
        except Exception as exc:  # MIRP raises plain ValueError/TypeError/... for bad cases
            raise DataError(f"{lesion}: MIRP failed: {type(exc).__name__}: {exc}") from exc
    if not tables or tables[0] is None or len(tables[0]) == 0:
        raise DataError(f"{lesion}: MIRP returned no features")
    row = tables[0].iloc[0]
    out: dict[str, float] = {}
    for name, value in row.items():
        if not str(name).startswith(_FAMILIES):
            continue
        number = float(value)
        if math.isnan(number):
            continue  # MIRP's NaN means "not defined for this ROI" (e.g. an empty bin)
        if not math.isfinite(number):
            raise DataError(f"{lesion}: MIRP feature {name} is not finite ({number})")
        out[mirp_tag(str(name))] = number
    if not out:
        raise DataError(f"{lesion}: MIRP returned no features")
    return out
