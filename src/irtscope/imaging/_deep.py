"""3D CNN on lesion-centred patches: configuration, network, training, checkpoints, inference.

The unit is the lesion (per-lesion progressive disease), lesions are nested in patients, so the
early-stopping validation split is grouped by patient: a patient's other lesions in the training
part would otherwise leak into the score that picks the epoch.

Randomness: the library never seeds the global generators. :func:`train_lesion_cnn` draws its
seeds from ``random_state`` and runs inside ``torch.random.fork_rng`` (so weight init and dropout
are reproducible, and the caller's global torch state is restored afterwards); the data order
uses its own ``torch.Generator`` and MONAI's random transforms get their own seed.
Entry points (CLI, benchmark) call :func:`seed_everything` once.
"""

from __future__ import annotations

import copy
import functools
import math
import os
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from irtscope._console import ProgressCallback
from irtscope._errors import ConfigError, DataError
from irtscope.imaging._patches import PatchSettings

if TYPE_CHECKING:
    import torch
    from torch import nn

__all__ = [
    "AugmentSettings",
    "DeepConfig",
    "TrainedLesionCNN",
    "load_checkpoint",
    "load_deep_config",
    "predict_lesion_cnn",
    "resolve_device",
    "save_checkpoint",
    "seed_everything",
    "train_lesion_cnn",
    "validation_split",
]

_CHECKPOINT_FORMAT = "irtscope-lesion-cnn"
_CHECKPOINT_VERSION = 1


class AugmentSettings(BaseModel):
    """Training-time augmentation (MONAI dictionary transforms).

    Spatial transforms move image and mask together (bilinear for the image, nearest for the
    mask); intensity jitter touches only the image channel.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    enabled: bool = True
    flip_prob: float = Field(0.5, ge=0.0, le=1.0)
    rotate_deg: float = Field(10.0, ge=0.0, le=45.0)
    rotate_prob: float = Field(0.5, ge=0.0, le=1.0)
    intensity_scale: float = Field(0.1, ge=0.0, le=1.0)
    intensity_shift: float = Field(0.05, ge=0.0, le=1.0)
    intensity_prob: float = Field(0.5, ge=0.0, le=1.0)


class DeepConfig(BaseModel):
    """Everything that defines a lesion CNN run; saved in its checkpoint.

    Presets: ``small`` (32^3 at 2 mm, a 3-block CNN of 8-16-32 channels, at most 15 epochs:
    minutes on a CPU) and ``full`` (48^3 at 1.5 mm, a 4-block 16-128-channel CNN, at most 40
    epochs with patience 8). ``architecture="resnet10"`` swaps in MONAI's 3D ResNet-10 (14 M
    parameters: meant for a GPU and for cohorts larger than a few hundred lesions).
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    patch: PatchSettings = PatchSettings()
    architecture: Literal["cnn", "resnet10"] = "cnn"
    channels: tuple[int, ...] = Field((8, 16, 32), min_length=1, max_length=6)
    convs_per_block: int = Field(2, ge=1, le=3)
    norm: Literal["batch", "group", "none"] = "batch"
    dropout: float = Field(0.2, ge=0.0, lt=1.0)
    epochs: int = Field(8, ge=1, le=1000)
    patience: int = Field(3, ge=1)
    batch_size: int = Field(16, ge=2, le=1024)
    learning_rate: float = Field(1e-3, gt=0.0, le=1.0)
    weight_decay: float = Field(1e-4, ge=0.0)
    val_fraction: float = Field(0.2, gt=0.0, lt=0.5)
    balance: Literal["weighted_loss", "sampler", "none"] = "weighted_loss"
    augment: AugmentSettings = AugmentSettings()
    inference_batch_size: int = Field(64, ge=1)

    @classmethod
    def preset(cls, name: str) -> DeepConfig:
        """The ``small`` or ``full`` preset."""
        presets: dict[str, dict[str, Any]] = {
            "small": {
                "convs_per_block": 1,
                "epochs": 15,
                "patience": 4,
            },
            "full": {
                "patch": {"size": 48, "spacing_mm": 1.5},
                "channels": (16, 32, 64, 128),
                "convs_per_block": 1,
                "epochs": 40,
                "patience": 8,
                "learning_rate": 5e-4,
                "augment": {"rotate_deg": 15.0},
            },
        }
        if name not in presets:
            raise ConfigError(f"unknown deep preset {name!r}; use one of {sorted(presets)}")
        return cls.model_validate(presets[name])

    def updated(self, **changes: Any) -> DeepConfig:
        """A validated copy with ``changes`` (nested settings as dicts), e.g. for tests."""
        data = self.model_dump()
        for key, value in changes.items():
            if isinstance(value, dict) and isinstance(data.get(key), dict):
                data[key] = {**data[key], **value}
            else:
                data[key] = value
        return _validate(data, "updated config")


def _validate(data: Any, source: str) -> DeepConfig:
    try:
        return DeepConfig.model_validate(data)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in err['loc']) or '<root>'}: {err['msg']}"
            for err in exc.errors()
        )
        raise ConfigError(f"invalid deep config ({source}): {problems}") from None


def load_deep_config(config: str | Path | DeepConfig | dict[str, Any] | None) -> DeepConfig:
    """Resolve a preset name, a YAML file, a dict or a :class:`DeepConfig`.

    A YAML file may start from a preset with ``preset: small`` and override keys; unknown keys
    raise :class:`~irtscope.ConfigError` (a typo must not silently fall back to a default).
    """
    if config is None:
        return DeepConfig.preset("small")
    if isinstance(config, DeepConfig):
        return config
    if isinstance(config, dict):
        return _validate(config, "dict")
    text = str(config)
    if text in ("small", "full"):
        return DeepConfig.preset(text)
    path = Path(text)
    if not path.is_file():
        raise ConfigError(f"deep config {text!r} is neither a preset (small, full) nor a file")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML: {exc}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping of settings")
    base = data.pop("preset", None)
    if base is None:
        return _validate(data, str(path))
    try:
        return load_deep_config(str(base)).updated(**data)
    except ConfigError as exc:
        # name the file the user has to fix, not just "updated config"
        raise ConfigError(f"{path} (preset {base!r} + overrides): {exc}") from None


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and torch and make cuDNN deterministic: call once per entry point."""
    from monai.utils import set_determinism

    set_determinism(seed=int(seed))


def resolve_device(device: str = "auto") -> torch.device:
    """``auto`` picks CUDA when present, else CPU; asking for ``cuda`` without one is an error."""
    import torch

    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError("device 'cuda' requested but torch sees no CUDA device; use auto or cpu")
    if device != "cpu" and not device.startswith("cuda"):
        raise ConfigError(f"unknown device {device!r}; use auto, cpu or cuda")
    return torch.device(device)


def _build_network(config: DeepConfig) -> nn.Module:
    from torch import nn

    in_channels = config.patch.channels
    if config.architecture == "resnet10":
        from monai.networks.nets import resnet10

        return resnet10(spatial_dims=3, n_input_channels=in_channels, num_classes=1)

    blocks: list[nn.Module] = []
    previous = in_channels
    for width in config.channels:
        layers: list[nn.Module] = []
        for k in range(config.convs_per_block):
            layers += [
                nn.Conv3d(previous if k == 0 else width, width, 3, padding=1),
                _norm_layer(config.norm, width),
                nn.ReLU(inplace=True),
            ]
        blocks.append(nn.Sequential(*layers, nn.MaxPool3d(2)))
        previous = width
    return _lesion_cnn_class()(nn.Sequential(*blocks), previous, config.dropout)


def _norm_layer(kind: str, width: int) -> nn.Module:
    from torch import nn

    if kind == "batch":
        return nn.BatchNorm3d(width)
    if kind == "group":
        return nn.GroupNorm(min(8, width), width)
    return nn.Identity()


@functools.cache
def _lesion_cnn_class() -> type:
    from torch import nn

    class LesionCNN(nn.Module):
        """Conv blocks, global average pooling, dropout, one logit (progressive disease)."""

        def __init__(self, features: nn.Module, width: int, dropout: float) -> None:
            super().__init__()
            self.features = features
            self.head = nn.Sequential(
                nn.AdaptiveAvgPool3d(1), nn.Flatten(), nn.Dropout(dropout), nn.Linear(width, 1)
            )

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.head(self.features(x))

    return LesionCNN


def gradcam_layer(config: DeepConfig) -> str:
    """Name of the last convolutional stage (the Grad-CAM target) for ``config``'s network."""
    if config.architecture == "resnet10":
        return "layer4"
    return f"features.{len(config.channels) - 1}"


def _augmentation(settings: AugmentSettings, include_mask: bool, seed: int) -> Any:
    from monai.transforms import (
        Compose,
        RandFlipd,
        RandRotated,
        RandScaleIntensityd,
        RandShiftIntensityd,
    )

    spatial = ["image", "mask"] if include_mask else ["image"]
    modes = ("bilinear", "nearest") if include_mask else ("bilinear",)
    angle = math.radians(settings.rotate_deg)
    transforms: list[Any] = [
        RandFlipd(keys=spatial, prob=settings.flip_prob, spatial_axis=axis) for axis in range(3)
    ]
    if angle > 0:
        transforms.append(
            RandRotated(
                keys=spatial,
                range_x=angle,
                range_y=angle,
                range_z=angle,
                prob=settings.rotate_prob,
                keep_size=True,
                mode=modes,
                padding_mode="border",
            )
        )
    if settings.intensity_scale > 0:
        transforms.append(
            RandScaleIntensityd(
                keys="image", factors=settings.intensity_scale, prob=settings.intensity_prob
            )
        )
    if settings.intensity_shift > 0:
        transforms.append(
            RandShiftIntensityd(
                keys="image", offsets=settings.intensity_shift, prob=settings.intensity_prob
            )
        )
    compose = Compose(transforms)
    compose.set_random_state(seed=seed)
    return compose


@functools.cache
def _dataset_class() -> type:
    import torch
    from torch.utils.data import Dataset

    class PatchDataset(Dataset):
        """In-memory patches; augmentation (if any) applied per sample on the fly."""

        def __init__(self, patches: np.ndarray, labels: np.ndarray, transform: Any) -> None:
            self.patches = patches
            self.labels = labels.astype(np.float32)
            self.transform = transform

        def __len__(self) -> int:
            return len(self.labels)

        def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
            patch = self.patches[index]
            if self.transform is not None:
                item = {"image": patch[:1]}
                if patch.shape[0] > 1:
                    item["mask"] = patch[1:]
                out = self.transform(item)
                parts = [torch.as_tensor(out["image"])]
                if "mask" in out:
                    parts.append(torch.as_tensor(out["mask"]))
                tensor = torch.cat([p.as_subclass(torch.Tensor) for p in parts]).float()
            else:
                tensor = torch.from_numpy(np.ascontiguousarray(patch))
            return tensor, torch.tensor(self.labels[index])

    return PatchDataset


def validation_split(
    y: np.ndarray, groups: np.ndarray, val_fraction: float, random_state: int
) -> tuple[np.ndarray, np.ndarray]:
    """Patient-grouped, label-stratified train/validation split for early stopping.

    Uses the first fold of ``StratifiedGroupKFold`` with ``round(1 / val_fraction)`` folds that
    has both classes in its validation part (so AUC is defined); every patient's lesions stay
    on one side.
    """
    from sklearn.model_selection import StratifiedGroupKFold

    y = np.asarray(y)
    groups = np.asarray(groups)
    n_groups = len(np.unique(groups))
    if n_groups < 2:
        raise DataError("early stopping needs lesions from at least 2 patients (got 1)")
    n_splits = int(min(max(2, round(1.0 / val_fraction)), n_groups))
    min_class = int(np.bincount(y.astype(int)).min()) if len(np.unique(y)) > 1 else 0
    n_splits = max(2, min(n_splits, max(min_class, 2)))
    splitter = StratifiedGroupKFold(n_splits=n_splits, shuffle=True, random_state=random_state)
    first: tuple[np.ndarray, np.ndarray] | None = None
    for train_idx, val_idx in splitter.split(np.zeros(len(y)), y, groups):
        if first is None:
            first = (train_idx, val_idx)
        if len(np.unique(y[val_idx])) == 2 and len(np.unique(y[train_idx])) == 2:
            return train_idx, val_idx
    assert first is not None
    return first


@dataclass
class TrainedLesionCNN:
    """A trained network with the configuration (preprocessing included) that produced it."""

    model: Any
    config: DeepConfig
    history: list[dict[str, float]] = field(default_factory=list)
    best_epoch: int = 0
    train_seconds: float = 0.0
    device: str = "cpu"

    def predict(self, patches: np.ndarray, device: str | None = None) -> np.ndarray:
        """Probability of progressive disease per patch (see :func:`predict_lesion_cnn`)."""
        return predict_lesion_cnn(self, patches, device=device)


def _check_inputs(patches: np.ndarray, y: np.ndarray, config: DeepConfig) -> None:
    expected = (config.patch.channels, *([config.patch.size] * 3))
    if patches.ndim != 5 or tuple(patches.shape[1:]) != expected:
        raise DataError(
            f"patches have shape {patches.shape}; expected (n, {', '.join(map(str, expected))})"
            " for this config's patch settings"
        )
    if len(patches) != len(y):
        raise DataError(f"{len(patches)} patches but {len(y)} labels")
    labels = set(np.unique(y).tolist())
    if not labels <= {0, 1} or len(labels) < 2:
        raise DataError(f"labels must be binary 0/1 with both classes present; got {labels}")


def train_lesion_cnn(
    patches: np.ndarray,
    y: np.ndarray,
    groups: np.ndarray,
    config: DeepConfig,
    device: str = "auto",
    random_state: int | np.random.RandomState | None = None,
    progress: ProgressCallback | None = None,
) -> TrainedLesionCNN:
    """Train the lesion CNN with early stopping on a patient-grouped validation split.

    Parameters
    ----------
    patches : numpy.ndarray
        ``(n, channels, size, size, size)`` float32 from :func:`lesion_patches`.
    y : array-like of {0, 1}
        Per-lesion progressive disease.
    groups : array-like
        Patient ids (the validation split keeps each patient's lesions together).
    config : DeepConfig
    device : {"auto", "cpu", "cuda"}
    random_state : int, RandomState or None
        Source of every seed used (split, init, dropout, data order, augmentation).
    progress : callable, optional
        Advanced once per epoch.

    Returns
    -------
    TrainedLesionCNN
        The weights of the best validation epoch (AUC, ties broken by loss).
    """
    import torch
    from sklearn.metrics import roc_auc_score
    from sklearn.utils import check_random_state
    from torch.utils.data import DataLoader, WeightedRandomSampler

    patches = np.asarray(patches, dtype=np.float32)
    y = np.asarray(y).astype(int)
    groups = np.asarray(groups)
    _check_inputs(patches, y, config)
    rng = check_random_state(random_state)
    split_seed, torch_seed, loader_seed, aug_seed = (int(s) for s in rng.randint(0, 2**31 - 1, 4))
    train_idx, val_idx = validation_split(y, groups, config.val_fraction, split_seed)
    dev = resolve_device(device)
    y_train = y[train_idx]
    n_pos = max(int(y_train.sum()), 1)
    n_neg = max(len(y_train) - int(y_train.sum()), 1)

    started = time.perf_counter()
    fork_devices = [dev.index or 0] if dev.type == "cuda" else []
    with torch.random.fork_rng(devices=fork_devices):
        torch.manual_seed(torch_seed)
        model = _build_network(config).to(dev)
        transform = (
            _augmentation(config.augment, config.patch.include_mask, aug_seed)
            if config.augment.enabled
            else None
        )
        dataset = _dataset_class()(patches[train_idx], y_train, transform)
        generator = torch.Generator().manual_seed(loader_seed)
        if config.balance == "sampler":
            weights = np.where(y_train == 1, 1.0 / n_pos, 1.0 / n_neg)
            sampler = WeightedRandomSampler(
                torch.as_tensor(weights, dtype=torch.double),
                num_samples=len(y_train),
                replacement=True,
                generator=generator,
            )
            loader = DataLoader(
                dataset,
                batch_size=config.batch_size,
                sampler=sampler,
                drop_last=len(dataset) % config.batch_size == 1,
            )
        else:
            loader = DataLoader(
                dataset,
                batch_size=config.batch_size,
                shuffle=True,
                generator=generator,
                drop_last=len(dataset) % config.batch_size == 1,
            )
        pos_weight = (
            torch.tensor([n_neg / n_pos], device=dev) if config.balance == "weighted_loss" else None
        )
        criterion = torch.nn.BCEWithLogitsLoss(pos_weight=pos_weight)
        optimiser = torch.optim.AdamW(
            model.parameters(), lr=config.learning_rate, weight_decay=config.weight_decay
        )
        val_x = patches[val_idx]
        val_y = y[val_idx]
        best: tuple[float, float] = (-math.inf, -math.inf)
        best_state = copy.deepcopy(model.state_dict())
        best_epoch, stale = 0, 0
        history: list[dict[str, float]] = []
        for epoch in range(1, config.epochs + 1):
            epoch_start = time.perf_counter()
            model.train()
            total, seen = 0.0, 0
            for batch_x, batch_y in loader:
                batch_x = batch_x.to(dev, non_blocking=True)
                batch_y = batch_y.to(dev, non_blocking=True)
                optimiser.zero_grad(set_to_none=True)
                loss = criterion(model(batch_x).squeeze(1), batch_y)
                loss.backward()
                optimiser.step()
                total += float(loss.detach()) * len(batch_y)
                seen += len(batch_y)
            val_p = _predict(model, val_x, config.inference_batch_size, dev)
            clipped = np.clip(val_p, 1e-7, 1 - 1e-7)
            val_loss = float(-np.mean(val_y * np.log(clipped) + (1 - val_y) * np.log(1 - clipped)))
            val_auc = (
                float(roc_auc_score(val_y, val_p)) if len(np.unique(val_y)) == 2 else float("nan")
            )
            history.append(
                {
                    "epoch": float(epoch),
                    "train_loss": total / max(seen, 1),
                    "val_loss": val_loss,
                    "val_auc": val_auc,
                    "seconds": time.perf_counter() - epoch_start,
                }
            )
            score = (val_auc if not math.isnan(val_auc) else -math.inf, -val_loss)
            if score > best:
                best, best_epoch, stale = score, epoch, 0
                best_state = copy.deepcopy(model.state_dict())
            else:
                stale += 1
            if progress is not None:
                progress(1, config.epochs, f"epoch {epoch}")
            if stale >= config.patience:
                break
        model.load_state_dict(best_state)
        model.eval()
    return TrainedLesionCNN(
        model=model,
        config=config,
        history=history,
        best_epoch=best_epoch,
        train_seconds=time.perf_counter() - started,
        device=str(dev),
    )


def _predict(model: Any, patches: np.ndarray, batch_size: int, dev: Any) -> np.ndarray:
    import torch

    model.eval()
    out: list[np.ndarray] = []
    with torch.inference_mode():
        for start in range(0, len(patches), batch_size):
            batch = torch.from_numpy(np.ascontiguousarray(patches[start : start + batch_size]))
            logits = model(batch.to(dev)).squeeze(1)
            out.append(torch.sigmoid(logits).float().cpu().numpy())
    return np.concatenate(out) if out else np.zeros(0, dtype=np.float32)


def predict_lesion_cnn(
    trained: TrainedLesionCNN, patches: np.ndarray, device: str | None = None
) -> np.ndarray:
    """Batch inference: probability of progressive disease for each patch.

    Parameters
    ----------
    trained : TrainedLesionCNN
    patches : numpy.ndarray
        Extracted with ``trained.config.patch`` (the settings stored in the checkpoint).
    device : str, optional
        Defaults to the device the model lives on.
    """
    import torch

    patches = np.asarray(patches, dtype=np.float32)
    expected = (trained.config.patch.channels, *([trained.config.patch.size] * 3))
    if patches.ndim != 5 or tuple(patches.shape[1:]) != expected:
        raise DataError(f"patches have shape {patches.shape}; the model expects (n, {expected})")
    dev = resolve_device(device) if device is not None else next(trained.model.parameters()).device
    trained.model.to(dev)
    if isinstance(dev, torch.device):
        trained.device = str(dev)
    return _predict(trained.model, patches, trained.config.inference_batch_size, dev)


def save_checkpoint(trained: TrainedLesionCNN, path: str | Path) -> Path:
    """Write weights + config (preprocessing included) + history atomically to ``path``."""
    import torch

    import irtscope

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().cpu() for k, v in trained.model.state_dict().items()}
    payload = {
        "format": _CHECKPOINT_FORMAT,
        "version": _CHECKPOINT_VERSION,
        "config": trained.config.model_dump(mode="json"),
        "state_dict": state,
        "history": trained.history,
        "best_epoch": trained.best_epoch,
        "train_seconds": trained.train_seconds,
        "irtscope_version": irtscope.__version__,
        "torch_version": str(torch.__version__),
    }
    fd, tmp = tempfile.mkstemp(dir=path.parent, suffix=".pt.tmp")
    os.close(fd)
    try:
        torch.save(payload, tmp)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return path


def load_checkpoint(path: str | Path, device: str = "auto") -> TrainedLesionCNN:
    """Load a checkpoint written by :func:`save_checkpoint` (``weights_only``: no pickled code)."""
    import torch

    path = Path(path)
    if not path.is_file():
        raise DataError(f"checkpoint {path} does not exist")
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises several unrelated types for corrupt files
        raise DataError(f"checkpoint {path}: cannot be read ({exc})") from None
    if not isinstance(payload, dict) or payload.get("format") != _CHECKPOINT_FORMAT:
        raise DataError(f"checkpoint {path}: not an irtscope lesion-CNN checkpoint")
    if payload.get("version") != _CHECKPOINT_VERSION:
        raise DataError(f"checkpoint {path}: unsupported version {payload.get('version')}")
    config = _validate(payload["config"], str(path))
    model = _build_network(config)
    model.load_state_dict(payload["state_dict"])
    dev = resolve_device(device)
    model.to(dev).eval()
    return TrainedLesionCNN(
        model=model,
        config=config,
        history=list(payload.get("history", [])),
        best_epoch=int(payload.get("best_epoch", 0)),
        train_seconds=float(payload.get("train_seconds", 0.0)),
        device=str(dev),
    )
