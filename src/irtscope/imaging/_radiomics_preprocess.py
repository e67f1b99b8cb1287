"""IBSI 1 preprocessing that pyradiomics cannot do itself: combined re-segmentation, bin origin.

Why this module exists (``_preprocess.py`` is the *model* preprocessing: ComBat, filters):

* **Re-segmentation, range and outlier filter together (IBSI 1 section 2.5).** pyradiomics has
  one ``resegmentMode``. IBSI applies the range first and then the ``mean +/- 3 SD`` outlier
  filter computed on the voxels the range kept. Both steps keep exactly the ROI voxels inside one
  absolute window, so :func:`resegmentation_window` computes that window for a lesion and
  pyradiomics applies it as an absolute ``resegmentRange``: its own mask bookkeeping (shape on
  the morphological mask, intensity and texture on the intensity mask) stays untouched.
* **Bin origin of fixed bin size discretisation (IBSI 1 section 2.7).** pyradiomics places bin
  edges at multiples of ``binWidth`` and renumbers them so that the lowest *occupied* bin is 1.
  IBSI numbers bins from the lower bound of the re-segmentation range, ``floor((x - X_min) / w)
  + 1``; with configuration C (range [-1000, 400] HU, ROI minimum -939 HU) the first occupied
  bin is 3, not 1, and every grey-level-weighted texture feature depends on that index.
  :class:`IbsiBinningExtractor` is a pyradiomics extractor whose texture classes bin the IBSI way;
  everything else (matrices, features, settings validation) is pyradiomics' own code.
"""

from __future__ import annotations

import math
from collections import OrderedDict
from typing import Any

import numpy as np

__all__ = ["IbsiBinningExtractor", "ibsi_bin_origin", "resegmentation_window"]


def resegmentation_window(
    values: np.ndarray, resegmentation: Any
) -> tuple[float | None, float | None]:
    """The absolute intensity window that IBSI range + outlier re-segmentation keeps.

    Parameters
    ----------
    values : numpy.ndarray
        Intensities of the ROI voxels (after interpolation).
    resegmentation : Resegmentation
        ``range`` (inclusive, ``None`` for an open side) and/or ``sigma``.

    Returns
    -------
    tuple
        ``(lower, upper)``; ``None`` for an open side. The range is applied first and the
        outlier filter uses the mean and (population) standard deviation of the voxels the range
        kept, as IBSI 1 prescribes.
    """
    lower: float | None = None
    upper: float | None = None
    kept = np.asarray(values, dtype=float)
    if resegmentation.range is not None:
        lower, upper = resegmentation.range
        if lower is not None:
            kept = kept[kept >= lower]
        if upper is not None:
            kept = kept[kept <= upper]
    if resegmentation.sigma is not None and kept.size:
        mean, sd = float(kept.mean()), float(kept.std())
        lo, hi = mean - resegmentation.sigma * sd, mean + resegmentation.sigma * sd
        lower = lo if lower is None else max(lower, lo)
        upper = hi if upper is None else min(upper, hi)
    return lower, upper


def ibsi_bin_origin(params: Any, roi_values: np.ndarray) -> float:
    """IBSI's ``X_min`` for fixed bin size: re-segmentation lower bound, else the ROI minimum."""
    reseg = params.irtscope.resegmentation
    if reseg is not None and reseg.range is not None and reseg.range[0] is not None:
        return float(reseg.range[0])
    rng = params.setting.resegment_range
    if rng is not None and (params.setting.resegment_mode or "absolute") == "absolute":
        return float(rng[0])
    return float(np.min(roi_values))


def _ibsi_binning(origin: float) -> Any:
    """An ``_applyBinning`` replacement: edges ``origin + k * binWidth``, bin 1 at ``origin``."""
    from radiomics import imageoperations

    def apply(self: Any, matrix: np.ndarray) -> np.ndarray:
        width = self.settings.get("binWidth")
        if self.settings.get("binCount") is not None or width is None:
            # fixed bin number: pyradiomics already bins from the ROI minimum, as IBSI does
            matrix, _ = imageoperations.binImage(matrix, self.maskArray, **self.settings)
        else:
            inside = matrix[self.maskArray]
            top = float(inside.max())
            n_edges = math.floor((top - origin) / width) + 2
            edges = origin + width * np.arange(n_edges + 1)
            binned = np.zeros(matrix.shape, dtype=int)
            binned[self.maskArray] = np.digitize(inside, edges)
            matrix = binned
        self.coefficients["grayLevels"] = np.unique(matrix[self.maskArray])
        self.coefficients["Ng"] = int(np.max(self.coefficients["grayLevels"]))
        return matrix

    return apply


def _extractor_base() -> type:
    from radiomics.featureextractor import RadiomicsFeatureExtractor

    return RadiomicsFeatureExtractor


class IbsiBinningExtractor(_extractor_base()):  # type: ignore[misc]
    """pyradiomics' extractor with IBSI fixed-bin-size discretisation (bin 1 at ``bin_origin``).

    Only :meth:`computeFeatures` differs: it instantiates each enabled feature class through a
    subclass whose ``_applyBinning`` numbers bins from ``bin_origin``. The classes are made per
    extractor, so nothing in pyradiomics is patched globally and a plain extractor in the same
    process is unaffected.
    """

    def __init__(self, params: dict[str, Any], bin_origin: float) -> None:
        super().__init__(params)
        self.bin_origin = float(bin_origin)

    def computeFeatures(
        self, image: Any, mask: Any, imageTypeName: str, **kwargs: Any
    ) -> OrderedDict[str, Any]:
        """Same contract as pyradiomics' ``computeFeatures``, IBSI bin origin for FBS."""
        from radiomics import getFeatureClasses

        classes = getFeatureClasses()
        binning = _ibsi_binning(self.bin_origin)
        out: OrderedDict[str, Any] = OrderedDict()
        for class_name, feature_names in self.enabledFeatures.items():
            if class_name.startswith("shape") or class_name not in classes:
                continue
            base = classes[class_name]
            # same module name, so pyradiomics' loggers (and irtscope's filter on them) apply
            ibsi_class = type(
                f"Ibsi{base.__name__}",
                (base,),
                {"_applyBinning": binning, "__module__": base.__module__},
            )
            instance = ibsi_class(image, mask, **kwargs)
            for feature in feature_names or []:
                instance.enableFeatureByName(feature)
            for feature, value in instance.execute().items():
                out[f"{imageTypeName}_{class_name}_{feature}"] = value
        return out
