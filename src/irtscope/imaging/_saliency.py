"""Where the lesion CNN looks: Grad-CAM or occlusion maps for a few lesions, as figures.

Saliency is a sanity check, not an explanation: a map centred on the lesion and its margin is
reassuring; one lit up on the patch border or on padding suggests the network learned a
shortcut (field-of-view, scanner) rather than lesion appearance.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Literal

import numpy as np

from irtscope._errors import ConfigError
from irtscope.imaging._deep import TrainedLesionCNN, gradcam_layer

__all__ = ["saliency_figure", "saliency_maps", "select_saliency_lesions"]


def _gradcam(trained: TrainedLesionCNN, batch: Any) -> np.ndarray:
    import copy

    from monai.visualize import GradCAM

    # GradCAM registers hooks on the module it is given: use a copy so the trained model
    # (saved and reused for inference afterwards) stays hook-free.
    model = copy.deepcopy(trained.model).eval()
    cam = GradCAM(nn_module=model, target_layers=gradcam_layer(trained.config))
    maps = cam(x=batch, class_idx=0)
    return maps.detach().cpu().numpy()[:, 0]


def _occlusion(trained: TrainedLesionCNN, batch: Any, window: int) -> np.ndarray:
    """Drop in P(PD) when a ``window``^3 cube is set to air, spread back over the cube."""
    import torch

    model = trained.model
    size = batch.shape[-1]
    stride = max(1, window // 2)
    starts = list(range(0, size - window + 1, stride))
    out = np.zeros((batch.shape[0], size, size, size), dtype=np.float32)
    counts = np.zeros((size, size, size), dtype=np.float32)
    with torch.inference_mode():
        base = torch.sigmoid(model(batch)).squeeze(1).cpu().numpy()
        for z in starts:
            for y in starts:
                for x in starts:
                    occluded = batch.clone()
                    occluded[:, 0, z : z + window, y : y + window, x : x + window] = 0.0
                    p = torch.sigmoid(model(occluded)).squeeze(1).cpu().numpy()
                    out[:, z : z + window, y : y + window, x : x + window] += (base - p)[
                        :, None, None, None
                    ]
                    counts[z : z + window, y : y + window, x : x + window] += 1.0
    return out / np.maximum(counts, 1.0)


def saliency_maps(
    trained: TrainedLesionCNN,
    patches: np.ndarray,
    method: Literal["gradcam", "occlusion"] = "gradcam",
    occlusion_window: int = 8,
) -> np.ndarray:
    """Saliency volumes ``(n, size, size, size)`` scaled to [0, 1] per lesion.

    Parameters
    ----------
    trained : TrainedLesionCNN
    patches : numpy.ndarray
        A few patches (Grad-CAM needs one backward pass each; occlusion ``(size/stride)^3``
        forward passes).
    method : {"gradcam", "occlusion"}
        Grad-CAM (MONAI) on the last convolutional stage, or model-agnostic occlusion.
    """
    import torch

    device = next(trained.model.parameters()).device
    batch = torch.from_numpy(np.ascontiguousarray(patches, dtype=np.float32)).to(device)
    trained.model.eval()
    if method == "gradcam":
        maps = _gradcam(trained, batch)
    elif method == "occlusion":
        maps = _occlusion(trained, batch, occlusion_window)
    else:
        raise ConfigError(f"unknown saliency method {method!r}; use gradcam or occlusion")
    maps = np.nan_to_num(np.asarray(maps, dtype=np.float32))
    lo = maps.reshape(len(maps), -1).min(axis=1)[:, None, None, None]
    hi = maps.reshape(len(maps), -1).max(axis=1)[:, None, None, None]
    return (maps - lo) / np.where(hi > lo, hi - lo, 1.0)


def select_saliency_lesions(y: np.ndarray, scores: np.ndarray, n: int = 4) -> list[int]:
    """Indices of the most confident true positives and true negatives (half each).

    Showing confident, correct cases answers "what does the model key on when it is right";
    the report says so in the caption.
    """
    y = np.asarray(y).astype(int)
    scores = np.asarray(scores, dtype=float)
    pos = [int(i) for i in np.argsort(-scores) if y[i] == 1][: (n + 1) // 2]
    neg = [int(i) for i in np.argsort(scores) if y[i] == 0][: n // 2]
    return pos + neg


def saliency_figure(
    patches: np.ndarray,
    maps: np.ndarray,
    titles: Sequence[str],
    spacing_mm: float,
    suptitle: str | None = None,
) -> Any:
    """One row per lesion: axial, coronal, sagittal slices through the patch centre.

    The CT (windowed channel) is grey, the saliency map is overlaid in colour, and the lesion
    mask (when the patch has one) is outlined. ``suptitle`` goes above the grid (the deep
    report puts "SIMULATED data" there, since a figure travels without its caption).
    """
    from matplotlib.figure import Figure

    n = len(patches)
    fig = Figure(figsize=(7.5, 2.5 * max(n, 1)), layout="constrained")
    axes = fig.subplots(max(n, 1), 3, squeeze=False)
    size = patches.shape[-1]
    mid = size // 2
    extent = (0, size * spacing_mm, 0, size * spacing_mm)
    views = (
        ("axial", lambda v: v[mid]),
        ("coronal", lambda v: v[:, mid]),
        ("sagittal", lambda v: v[:, :, mid]),
    )
    for row in range(n):
        for col, (name, cut) in enumerate(views):
            ax = axes[row, col]
            ax.imshow(cut(patches[row, 0]), cmap="gray", vmin=0, vmax=1, extent=extent)
            ax.imshow(
                cut(maps[row]), cmap="inferno", alpha=0.45, vmin=0, vmax=1, extent=extent
            )
            if patches.shape[1] > 1:
                ax.contour(
                    np.flipud(cut(patches[row, 1])),
                    levels=[0.5],
                    colors="cyan",
                    linewidths=0.8,
                    extent=extent,
                )
            ax.set_xticks([])
            ax.set_yticks([])
            if row == 0:
                ax.set_title(name, fontsize=9)
            if col == 0:
                ax.set_ylabel(titles[row], fontsize=8)
    if suptitle:
        fig.suptitle(suptitle, fontsize=10)
    return fig
