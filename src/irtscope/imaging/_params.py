"""Validated pyradiomics parameter files and the presets irtscope ships.

A preset is an ordinary pyradiomics parameter YAML (``imageType``, ``featureClass``,
``setting``) so it can be handed to pyradiomics unchanged, plus an optional ``irtscope``
section for provenance (a description and the IBSI configuration it reproduces).

Why validate here when pyradiomics validates too: pyradiomics checks the schema with pykwalify
inside the worker, after the job has fanned out, and its error names neither the file nor the
fix. Here unknown keys and out-of-range values raise :class:`~irtscope.ConfigError` before
anything runs (the MIRP lesson: settings that silently ignore typos are worse than none).
The YAML keeps pyradiomics' camelCase spelling; the Python fields are snake_case aliases.
"""

from __future__ import annotations

import hashlib
import json
from importlib import resources
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    PrivateAttr,
    ValidationError,
    field_validator,
    model_validator,
)

from irtscope._errors import ConfigError

__all__ = ["PRESETS", "Interpolation", "RadiomicsParams", "Resegmentation", "load_params"]

#: Preset name -> YAML file in ``irtscope/imaging/params``.
PRESETS: dict[str, str] = {
    "ibsi-a": "ibsi_a.yaml",
    "ibsi-b": "ibsi_b.yaml",
    "ibsi-c": "ibsi_c.yaml",
    "ibsi-d": "ibsi_d.yaml",
    "ibsi-e": "ibsi_e.yaml",
    "ibsi-digital": "ibsi_digital.yaml",
    "lung-ct": "lung_ct.yaml",
}

_IMAGE_TYPES = {
    "Original",
    "LoG",
    "Wavelet",
    "Square",
    "SquareRoot",
    "Logarithm",
    "Exponential",
    "Gradient",
    "LBP2D",
    "LBP3D",
}
_FEATURE_CLASSES = {"shape", "shape2D", "firstorder", "glcm", "glrlm", "glszm", "gldm", "ngtdm"}
_INTERPOLATORS = {
    "sitkNearestNeighbor",
    "sitkLinear",
    "sitkBSpline",
    "sitkGaussian",
    "sitkLabelGaussian",
    "sitkHammingWindowedSinc",
    "sitkCosineWindowedSinc",
    "sitkWelchWindowedSinc",
    "sitkLanczosWindowedSinc",
    "sitkBlackmanWindowedSinc",
}


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)


class RadiomicsSettings(_Strict):
    """The pyradiomics ``setting`` block (see pyradiomics' ``paramSchema.yaml``).

    Only the keys irtscope supports are accepted; every value is range-checked. ``None``
    means "pyradiomics default" and is not passed on.
    """

    minimum_roi_dimensions: int | None = Field(None, alias="minimumROIDimensions", ge=1, le=3)
    minimum_roi_size: int | None = Field(None, alias="minimumROISize", gt=0)
    geometry_tolerance: float | None = Field(None, alias="geometryTolerance", gt=0)
    correct_mask: bool | None = Field(None, alias="correctMask")
    additional_info: bool | None = Field(None, alias="additionalInfo")
    label: int | None = Field(None, gt=0)
    bin_width: float | None = Field(None, alias="binWidth", gt=0)
    bin_count: int | None = Field(None, alias="binCount", gt=0)
    normalize: bool | None = None
    normalize_scale: float | None = Field(None, alias="normalizeScale", gt=0)
    remove_outliers: float | None = Field(None, alias="removeOutliers", gt=0)
    resampled_pixel_spacing: tuple[float, float, float] | None = Field(
        None, alias="resampledPixelSpacing"
    )
    interpolator: str | None = None
    pad_distance: int | None = Field(None, alias="padDistance", ge=0)
    distances: tuple[int, ...] | None = None
    force_2d: bool | None = Field(None, alias="force2D")
    force_2d_dimension: int | None = Field(None, alias="force2Ddimension", ge=0, le=2)
    resegment_range: tuple[float, ...] | None = Field(None, alias="resegmentRange")
    resegment_mode: Literal["absolute", "relative", "sigma"] | None = Field(
        None, alias="resegmentMode"
    )
    resegment_shape: bool | None = Field(None, alias="resegmentShape")
    pre_crop: bool | None = Field(None, alias="preCrop")
    sigma: tuple[float, ...] | None = None
    start_level: int | None = Field(None, ge=0)
    level: int | None = Field(None, gt=0)
    wavelet: str | None = None
    voxel_array_shift: int | None = Field(None, alias="voxelArrayShift")
    symmetrical_glcm: bool | None = Field(None, alias="symmetricalGLCM")
    weighting_norm: Literal["manhattan", "euclidean", "infinity", "no_weighting"] | None = Field(
        None, alias="weightingNorm"
    )
    gldm_a: int | None = Field(None, ge=0)

    @field_validator("interpolator")
    @classmethod
    def _known_interpolator(cls, value: str | None) -> str | None:
        if value is not None and value not in _INTERPOLATORS:
            raise ValueError(f"unknown interpolator {value!r}; use one of {sorted(_INTERPOLATORS)}")
        return value

    @field_validator("resampled_pixel_spacing")
    @classmethod
    def _non_negative_spacing(cls, value: tuple[float, ...] | None) -> tuple[float, ...] | None:
        if value is not None and any(v < 0 for v in value):
            raise ValueError("resampledPixelSpacing must be >= 0 (0 keeps that axis)")
        return value

    @field_validator("distances", "sigma")
    @classmethod
    def _positive_items(cls, value: tuple[float, ...] | None) -> tuple[float, ...] | None:
        if value is not None and (not value or any(v <= 0 for v in value)):
            raise ValueError("must be a non-empty list of positive numbers")
        return value

    @model_validator(mode="after")
    def _consistent(self) -> RadiomicsSettings:
        if self.bin_width is not None and self.bin_count is not None:
            raise ValueError(
                "give binWidth (fixed bin size) or binCount (fixed bin number), not both"
            )
        rng = self.resegment_range
        if rng is not None and (len(rng) not in (1, 2) or (len(rng) == 2 and rng[0] >= rng[1])):
            raise ValueError("resegmentRange must be [lower] or [lower, upper] with lower < upper")
        return self


class Interpolation(_Strict):
    """IBSI-conformant resampling done by irtscope before pyradiomics sees the image.

    pyradiomics' own resampling (``resampledPixelSpacing``) anchors the new grid at the ROI
    bounding-box corner, resamples the mask with nearest neighbour and keeps fractional
    intensities. IBSI 1 (section 2.4) centres the new grid on the old one, interpolates the
    mask like an image and keeps voxels >= 0.5, and rounds CT intensities to integers. The IBSI
    CT configurations B-E are only reproducible with the latter, so irtscope does it itself.

    Attributes
    ----------
    spacing : tuple of 3 floats
        New voxel spacing in mm (x, y, z); 0 keeps the original spacing of that axis.
    image_interpolator : {"linear", "bspline", "nearest"}
        Image interpolation (IBSI "trilinear" is ``linear``, "tricubic spline" ``bspline``).
    mask_interpolator : {"linear", "nearest"}
        Mask interpolation; ``linear`` is followed by thresholding at ``mask_threshold``.
    mask_threshold : float
        Partial-volume fraction above which an interpolated mask voxel is in the ROI.
    round_intensities : bool
        Round interpolated intensities to the nearest integer (IBSI does for CT HU).
    """

    spacing: tuple[float, float, float]
    image_interpolator: Literal["linear", "bspline", "nearest"] = "linear"
    mask_interpolator: Literal["linear", "nearest"] = "linear"
    mask_threshold: float = Field(0.5, gt=0, le=1)
    round_intensities: bool = False

    @field_validator("spacing")
    @classmethod
    def _spacing(cls, value: tuple[float, float, float]) -> tuple[float, float, float]:
        if any(v < 0 for v in value) or not any(v > 0 for v in value):
            raise ValueError("spacing must be >= 0 with at least one axis > 0 (0 keeps an axis)")
        return value


class Resegmentation(_Strict):
    """IBSI 1 intensity re-segmentation, done by irtscope (section 2.5 of the reference manual).

    pyradiomics applies *one* ``resegmentMode`` (absolute range, relative or sigma). IBSI
    configuration E needs both a range *and* the outlier filter, in that order: voxels outside
    ``range`` go first, then mean and standard deviation of the remaining ROI voxels define the
    ``mean +/- sigma * SD`` window. Both steps together select the voxels inside one absolute
    window, so irtscope computes that window per lesion and hands pyradiomics an absolute
    ``resegmentRange`` (the MIRP engine gets both settings natively).

    Attributes
    ----------
    range : tuple of 2 floats or None, optional
        Inclusive intensity range ``[lower, upper]``; ``None`` for an open side.
    sigma : float, optional
        Outlier filter width in standard deviations (IBSI uses 3).
    """

    range: tuple[float | None, float | None] | None = None
    sigma: float | None = Field(None, gt=0)

    @model_validator(mode="after")
    def _bounds(self) -> Resegmentation:
        if self.range is None and self.sigma is None:
            raise ValueError("give range, sigma or both")
        if self.range is not None:
            lower, upper = self.range
            if lower is None and upper is None:
                raise ValueError("range needs at least one bound")
            if lower is not None and upper is not None and lower >= upper:
                raise ValueError("range must be [lower, upper] with lower < upper")
        return self


class IrtscopeSection(_Strict):
    """irtscope additions that travel with a preset (not passed to pyradiomics).

    ``bin_origin`` decides where fixed-bin-size discretisation starts. ``"zero"`` is
    pyradiomics' rule (bin edges at multiples of ``binWidth``, the lowest occupied bin is 1).
    ``"ibsi"`` is IBSI 1's rule (bin 1 starts at the lower bound of the re-segmentation range,
    or at the ROI minimum without one): grey-level-weighted texture features (joint average,
    autocorrelation, low/high grey-level emphases) depend on the absolute bin index, so only
    ``"ibsi"`` reproduces configuration C.
    """

    description: str = ""
    ibsi_config: Literal["A", "B", "C", "D", "E", "digital"] | None = None
    interpolation: Interpolation | None = None
    resegmentation: Resegmentation | None = None
    bin_origin: Literal["zero", "ibsi"] = "zero"


class RadiomicsParams(_Strict):
    """A validated pyradiomics parameter set.

    Build it with :func:`load_params`; :meth:`to_pyradiomics` gives the dict pyradiomics'
    ``RadiomicsFeatureExtractor`` takes and :attr:`digest` a stable hash for cache keys.
    """

    engine: Literal["pyradiomics", "mirp"] = "pyradiomics"
    image_type: dict[str, dict[str, Any]] = Field(
        default_factory=lambda: {"Original": {}}, alias="imageType"
    )
    feature_class: dict[str, list[str] | None] = Field(default_factory=dict, alias="featureClass")
    setting: RadiomicsSettings = Field(default_factory=RadiomicsSettings)
    irtscope: IrtscopeSection = Field(default_factory=IrtscopeSection)
    mirp: dict[str, Any] = Field(default_factory=dict)
    _source: str = PrivateAttr(default="")

    @property
    def name(self) -> str:
        """Where these parameters came from: the preset name or the file path."""
        return self._source

    @field_validator("image_type", mode="before")
    @classmethod
    def _image_types(cls, value: Any) -> Any:
        if not isinstance(value, dict) or not value:
            raise ValueError("imageType must map at least one image type (e.g. Original: {})")
        unknown = set(value) - _IMAGE_TYPES
        if unknown:
            raise ValueError(
                f"unknown image type(s) {sorted(unknown)}; known: {sorted(_IMAGE_TYPES)}"
            )
        return {k: (v or {}) for k, v in value.items()}

    @field_validator("feature_class", mode="before")
    @classmethod
    def _feature_classes(cls, value: Any) -> Any:
        if value is None:
            return {}
        if not isinstance(value, dict):
            raise ValueError("featureClass must map class names to a list of features or null")
        unknown = set(value) - _FEATURE_CLASSES
        if unknown:
            raise ValueError(
                f"unknown feature class(es) {sorted(unknown)}; known: {sorted(_FEATURE_CLASSES)}"
            )
        known = _feature_names()
        for cls_name, features in value.items():
            bad = sorted(set(features or []) - known.get(cls_name, set()))
            if bad:
                raise ValueError(f"featureClass {cls_name}: unknown feature(s) {bad}")
        return value

    @model_validator(mode="after")
    def _one_resampler(self) -> RadiomicsParams:
        if self.irtscope.interpolation is not None and self.setting.resampled_pixel_spacing:
            raise ValueError(
                "irtscope.interpolation and setting.resampledPixelSpacing both resample; "
                "keep one of them"
            )
        if self.irtscope.resegmentation is not None and self.setting.resegment_range is not None:
            raise ValueError(
                "irtscope.resegmentation and setting.resegmentRange both re-segment; "
                "keep one of them"
            )
        return self

    def to_pyradiomics(self) -> dict[str, Any]:
        """The parameter dict for ``RadiomicsFeatureExtractor`` (camelCase keys, no ``None``)."""
        return {
            "imageType": {k: dict(v) for k, v in self.image_type.items()},
            "featureClass": {k: (list(v) if v else []) for k, v in self.feature_class.items()},
            "setting": {
                k: (list(v) if isinstance(v, tuple) else v)
                for k, v in self.setting.model_dump(by_alias=True, exclude_none=True).items()
            },
        }

    @property
    def digest(self) -> str:
        """sha256 of the canonical pyradiomics dict: equal settings give equal cache keys."""
        content = self.to_pyradiomics()
        interpolation = self.irtscope.interpolation
        content["interpolation"] = interpolation.model_dump() if interpolation else None
        # Keys added later enter the digest only when used, so existing cache keys stay valid.
        if self.irtscope.resegmentation is not None:
            content["resegmentation"] = self.irtscope.resegmentation.model_dump()
        if self.irtscope.bin_origin != "zero":
            content["bin_origin"] = self.irtscope.bin_origin
        if self.engine != "pyradiomics":
            content["engine"] = self.engine
            content["mirp"] = self.mirp
            # bump when irtscope's YAML -> MIRP translation changes what MIRP computes
            content["mirp_translation"] = 1
        blob = json.dumps(content, sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(blob.encode()).hexdigest()

    def with_settings(self, **changes: Any) -> RadiomicsParams:
        """A copy with some ``setting`` keys changed (snake_case or camelCase), re-validated."""
        merged = self.setting.model_dump(by_alias=True, exclude_none=True)
        alias = {n: f.alias or n for n, f in RadiomicsSettings.model_fields.items()}
        merged.update({alias.get(k, k): v for k, v in changes.items()})
        data = self.model_dump(by_alias=True)
        data["setting"] = merged
        return _validate(data, self.name or "<modified params>")


def _feature_names() -> dict[str, set[str]]:
    """Feature names per pyradiomics class (deprecated ones included; pyradiomics decides)."""
    from radiomics import getFeatureClasses

    return {name: set(cls.getFeatureNames()) for name, cls in getFeatureClasses().items()}


def _validate(data: Any, source: str) -> RadiomicsParams:
    if not isinstance(data, dict):
        raise ConfigError(f"{source}: a parameter file must be a YAML mapping")
    try:
        params = RadiomicsParams.model_validate(data)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in err['loc']) or '<root>'}: {err['msg']}"
            for err in exc.errors()
        )
        raise ConfigError(f"{source}: invalid radiomics parameters ({problems})") from None
    params._source = source
    return params


def load_params(
    params: str | Path | dict[str, Any] | RadiomicsParams = "lung-ct",
) -> RadiomicsParams:
    """Load and validate a preset name, a YAML path or an already-parsed dict.

    Parameters
    ----------
    params
        A preset name from :data:`PRESETS` (``"ibsi-a"`` ... ``"ibsi-e"``, ``"ibsi-digital"``,
        ``"lung-ct"``), a path to a pyradiomics parameter YAML, a dict with the same content,
        or a :class:`RadiomicsParams` (returned unchanged).

    Raises
    ------
    ConfigError
        Unknown preset, unreadable file, unknown keys or out-of-range values.
    """
    if isinstance(params, RadiomicsParams):
        return params
    if isinstance(params, dict):
        return _validate(params, "<params dict>")
    text_name = str(params)
    if text_name in PRESETS:
        resource = resources.files("irtscope.imaging") / "params" / PRESETS[text_name]
        data = yaml.safe_load(resource.read_text(encoding="utf-8"))
        return _validate(data, text_name)
    path = Path(params)
    if not path.is_file():
        raise ConfigError(
            f"radiomics parameters {text_name!r}: not a preset ({', '.join(PRESETS)}) "
            "and no such file"
        )
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML ({exc})") from None
    return _validate(data, str(path))
