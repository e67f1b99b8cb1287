"""Simulated immunoradiotherapy imaging cohorts with known ground truth (all output is SIMULATED).

The trials the imaging method is modelled on (PEMBRO-RT, NIVORAD, MDACC) do not share their
images, yet every imaging stage (feature extraction, harmonisation, radiomics and deep models,
survival models, external validation) needs cohort-sized data to be tested end to end. This
module writes three cohorts of lung-CT-like volumes whose lesion phenotypes, per-lesion
progressive-disease (PD) labels and patient survival are all driven by one documented latent
variable, so that the signal a model finds can be checked against the truth.

The generative model (see ``docs/simulator.md`` for the full story):

1. Patient immune responsiveness ``z ~ N(shift_cohort, 1)``; arm randomised 1:1 in permuted
   blocks of four; PD-L1 TPS increases with ``z``.
2. Lesion latent response ``r = a*z + b*[arm is ICI+SBRT] + s*e`` with ``e ~ N(0, 1)``;
   ``P(PD) = sigmoid(c0 - c1*r)``.
3. Lesion phenotype (radius, lobulation, spiculation, internal heterogeneity, margin width,
   necrotic core fraction, solid density) = function of ``-r`` plus noise.
4. Overall and progression-free survival from Weibull proportional-hazards models whose linear
   predictor uses ``z``, log lesion burden, PD-L1, arm (and the share of PD lesions for PFS);
   censoring is administrative (staggered accrual) plus uniform drop-out.
5. Each cohort has its own acquisition profile (pixel spacing, slice thickness, reconstruction
   kernel blur, noise level and texture, HU calibration offset), so that the external cohorts
   differ from the development cohort the way real scanners do.

Randomness is never global: every patient draws from generators seeded by a SHA-256 hash of
``(seed, cohort, patient, stream)``, so a patient is identical whatever ``scale`` is used and
whatever order patients are written in.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
from scipy import ndimage, special

from irtscope._errors import ConfigError, DataError

__all__ = [
    "COHORTS",
    "AcquisitionProfile",
    "CohortSpec",
    "GenerativeModel",
    "simulate_cohorts",
]

logger = logging.getLogger(__name__)

ProgressCallback = Callable[[int, "int | None", str], None]

#: Version of the generative model; bump it when a change alters what a seed produces.
SIMULATOR_VERSION = "1.0"

#: In-plane field of view of every simulated volume (mm): a crop of one hemithorax.
FOV_MM = 100.0
#: Largest distance (mm) from a lesion's centre to the outer edge of its margin.
MAX_EXTENT_MM = 27.0
#: z spacing of the internal high-resolution grid; every slice thickness is a multiple of it.
FINE_DZ_MM = 1.25

#: Codes of the tissue map written next to each CT (diagnostics, e.g. noise in muscle).
TISSUE_CODES = {"air": 0, "fat": 1, "muscle": 2, "lung": 3, "vessel": 4, "lesion": 5}

_ARMS = ("ICI", "ICI+SBRT")


@dataclass(frozen=True)
class AcquisitionProfile:
    """How one cohort's scanners turn the true anatomy into an image.

    Parameters
    ----------
    kernel : str
        Name of the reconstruction kernel the blur stands for (``sharp``, ``standard``,
        ``soft``); written to the manifest for harmonisation.
    pixel_spacing_mm : float
        In-plane voxel size.
    slice_thickness_mm : float
        Slice thickness = slice spacing (slices are averaged over the thickness, so thick
        slices show partial-volume blur along z). Must be a multiple of ``FINE_DZ_MM``.
    kernel_sigma_mm : float
        SD of the in-plane Gaussian point-spread function (the kernel's sharpness).
    noise_sd_hu : float
        SD of the image noise in HU.
    noise_corr_mm : float
        In-plane correlation length of the noise (smooth kernels give blotchier noise).
    hu_offset : float
        Calibration offset added to every voxel (HU).
    """

    kernel: str
    pixel_spacing_mm: float
    slice_thickness_mm: float
    kernel_sigma_mm: float
    noise_sd_hu: float
    noise_corr_mm: float
    hu_offset: float


@dataclass(frozen=True)
class CohortSpec:
    """One simulated cohort: size, population shift and acquisition.

    Parameters
    ----------
    name : str
        Cohort label written to the manifest (``DEV-SIM``, ...).
    code : str
        Short code used in ids and file names (``DEV`` -> ``SIM_DEV_P001_ct.nii.gz``).
    like : str
        The real trial the cohort is shaped after (documentation only).
    n_patients : int
        Patients at ``scale=1``.
    response_shift : float
        Mean of the patient latent response ``z`` (case-mix difference between trials).
    lesion_count_probs : tuple of float
        Probabilities of 1..6 lesions per patient.
    acquisition : AcquisitionProfile
        The cohort's scanner/protocol.
    """

    name: str
    code: str
    like: str
    n_patients: int
    response_shift: float
    lesion_count_probs: tuple[float, ...]
    acquisition: AcquisitionProfile


#: The three cohorts: development (PEMBRO-RT-sized) and two external validation cohorts.
COHORTS: tuple[CohortSpec, ...] = (
    CohortSpec(
        name="DEV-SIM",
        code="DEV",
        like="PEMBRO-RT (NCT02492568): pembrolizumab +/- SBRT 3 x 8 Gy, 76 patients, 1:1",
        n_patients=76,
        response_shift=0.0,
        lesion_count_probs=(0.10, 0.20, 0.22, 0.20, 0.15, 0.13),
        acquisition=AcquisitionProfile(
            kernel="sharp",
            pixel_spacing_mm=0.78,
            slice_thickness_mm=1.25,
            kernel_sigma_mm=0.45,
            noise_sd_hu=22.0,
            noise_corr_mm=0.5,
            hu_offset=0.0,
        ),
    ),
    CohortSpec(
        name="EXT1-SIM",
        code="EXT1",
        like="NIVORAD (ACTRN12616000352404): nivolumab +/- single-fraction SABR",
        n_patients=60,
        response_shift=-0.15,
        lesion_count_probs=(0.14, 0.22, 0.22, 0.18, 0.13, 0.11),
        acquisition=AcquisitionProfile(
            kernel="standard",
            pixel_spacing_mm=0.68,
            slice_thickness_mm=2.5,
            kernel_sigma_mm=0.9,
            noise_sd_hu=32.0,
            noise_corr_mm=0.8,
            hu_offset=15.0,
        ),
    ),
    CohortSpec(
        name="EXT2-SIM",
        code="EXT2",
        like="MDACC (NCT02444741): pembrolizumab +/- RT",
        n_patients=70,
        response_shift=0.10,
        lesion_count_probs=(0.08, 0.17, 0.22, 0.21, 0.17, 0.15),
        acquisition=AcquisitionProfile(
            kernel="soft",
            pixel_spacing_mm=0.92,
            slice_thickness_mm=5.0,
            kernel_sigma_mm=1.4,
            noise_sd_hu=12.0,
            noise_corr_mm=1.3,
            hu_offset=-20.0,
        ),
    ),
)


@dataclass(frozen=True)
class GenerativeModel:
    """Coefficients of the generative model (documented in ``docs/simulator.md``).

    The defaults were chosen so that the true phenotype predicts PD clearly but not perfectly
    (a random forest on the true phenotype parameters reaches an AUC near 0.8; radiomics on
    the images a little less), so downstream models have something real but hard to find.
    """

    # lesion latent response r = z_weight*z + sbrt_effect*sbrt + lesion_sd*e
    z_weight: float = 0.75
    sbrt_effect: float = 0.35
    lesion_sd: float = 0.65
    # per-lesion PD: logit P(PD) = pd_intercept - pd_slope * r
    pd_intercept: float = -0.85
    pd_slope: float = 1.5
    # phenotype (aggressiveness a = -r)
    radius_log_mean: float = math.log(7.5)
    radius_log_slope: float = 0.14
    radius_log_sd: float = 0.30
    radius_range_mm: tuple[float, float] = (3.5, 14.0)
    lobulation_base: float = 0.07
    lobulation_slope: float = 0.03
    lobulation_sd: float = 0.03
    spicule_rate_base: float = 1.2
    spicule_rate_slope: float = 1.2
    heterogeneity_base_hu: float = 14.0
    heterogeneity_slope_hu: float = 4.5
    heterogeneity_sd_hu: float = 4.5
    margin_base_mm: float = 0.35
    margin_slope_mm: float = 0.12
    margin_sd_mm: float = 0.10
    necrosis_intercept: float = -2.0
    necrosis_slope: float = 1.0
    necrosis_max_fraction: float = 0.45
    solid_hu_base: float = 48.0
    solid_hu_slope: float = 3.0
    solid_hu_sd: float = 7.0
    necrosis_hu: float = 8.0
    # PD-L1: latent = pdl1_z_weight*z + sqrt(1 - w^2)*noise, mapped to a TPS mixture
    pdl1_z_weight: float = 0.45
    # survival: Weibull shape, median months at linear predictor 0, and coefficients
    os_shape: float = 1.3
    os_median_months: float = 14.0
    pfs_shape: float = 1.1
    pfs_median_months: float = 5.5
    os_beta_z: float = -0.55
    os_beta_burden: float = 0.30
    os_beta_pdl1_high: float = -0.25
    os_beta_sbrt: float = -0.15
    pfs_beta_z: float = -0.40
    pfs_beta_burden: float = 0.20
    pfs_beta_pdl1_high: float = -0.20
    pfs_beta_sbrt: float = -0.20
    pfs_beta_pd_share: float = 1.1
    burden_reference_ml: float = 5.0
    # censoring: accrual over accrual_months, analysis at study_months, uniform drop-out
    accrual_months: float = 24.0
    study_months: float = 40.0
    dropout_max_months: float = 180.0


@dataclass
class _Lesion:
    label: int
    latent: float
    pd: int
    radius_mm: float
    lobulation: float
    n_spicules: int
    spicule_length: float
    heterogeneity_hu: float
    texture_corr_mm: float
    margin_mm: float
    necrosis_fraction: float
    solid_hu: float
    necrosis_hu: float
    shape_seed: int
    extent_mm: float = 0.0
    center_mm: tuple[float, float, float] = (0.0, 0.0, 0.0)

    @property
    def volume_ml(self) -> float:
        return 4.0 / 3.0 * math.pi * self.radius_mm**3 / 1000.0


@dataclass
class _Patient:
    cohort: CohortSpec
    number: int
    patient_id: str
    file_stem: str
    arm: str
    z: float
    pdl1: float
    age: int
    sex: str
    lesions: list[_Lesion] = field(default_factory=list)
    os_time: float = 0.0
    os_event: int = 0
    pfs_time: float = 0.0
    pfs_event: int = 0


def simulate_cohorts(
    out_dir: str | Path,
    seed: int = 0,
    scale: float = 1.0,
    progress: ProgressCallback | None = None,
    crop_margin_mm: float = 12.0,
    cohorts: Sequence[str] | None = None,
) -> Path:
    """Write the three simulated cohorts (NIfTI CT, lesion label maps, manifest).

    Parameters
    ----------
    out_dir : str or Path
        Output folder (created). It receives ``images/SIM_<COHORT>_P###_ct.nii.gz`` (int16 HU),
        ``masks/SIM_<COHORT>_P###_lesions.nii.gz`` (uint8 label map: lesion *k* of the patient
        has value *k*, named by the manifest's ``mask_label``),
        ``tissue/SIM_<COHORT>_P###_tissue.nii.gz`` (tissue codes, see :data:`TISSUE_CODES`),
        ``manifest.csv``, ``simulation.json`` (all settings) and ``SIMULATED.txt``.
    seed : int, default 0
        Master seed. The same seed, scale and version give the same data on any machine.
    scale : float, default 1.0
        Multiplies every cohort's patient count (at least 4 patients per cohort are kept), e.g.
        0.3 for a quick demo. Patient *k* is the same at every scale.
    progress : callable, optional
        ``progress(advance, total, description)``, called once per written patient.
    crop_margin_mm : float, default 12.0
        Margin kept between every lesion's outer extent and the volume's edges along z (and,
        up to 12 mm, at the medial/anterior in-plane edges of the fixed 100 mm crop), so that
        patch-based models and texture filters see context around each lesion. 2 to 20 mm.
    cohorts : sequence of str, optional
        Write only these cohorts (names from :data:`COHORTS`); default all three. A cohort's
        patients do not depend on which other cohorts are written.

    Returns
    -------
    Path
        Path of ``manifest.csv`` (one row per lesion, ``simulated`` = True).

    Raises
    ------
    ConfigError
        ``scale`` is not positive, ``crop_margin_mm`` is out of range or a cohort name is
        unknown.
    """
    if not (isinstance(scale, int | float) and math.isfinite(scale) and scale > 0):
        raise ConfigError(f"scale must be a positive number, got {scale!r}")
    if not (isinstance(crop_margin_mm, int | float) and 2.0 <= crop_margin_mm <= 20.0):
        raise ConfigError(f"crop_margin_mm must be between 2 and 20 mm, got {crop_margin_mm!r}")
    known = {c.name: c for c in COHORTS}
    wanted = list(known) if cohorts is None else list(cohorts)
    unknown = [name for name in wanted if name not in known]
    if unknown or not wanted:
        raise ConfigError(f"unknown or no cohort(s) {unknown}; choose from {sorted(known)}")
    import SimpleITK as sitk  # heavy: import only when writing

    model = GenerativeModel()
    out = Path(out_dir)
    for sub in ("images", "masks", "tissue"):
        (out / sub).mkdir(parents=True, exist_ok=True)

    plan = [(c, max(4, round(c.n_patients * scale))) for c in COHORTS if c.name in wanted]
    total = sum(n for _, n in plan)
    rows: list[dict[str, object]] = []
    done = 0
    for cohort, n in plan:
        for number in range(1, n + 1):
            patient = _draw_patient(cohort, number, seed, model)
            ct, labels, tissue, spacing, origin = _render_patient(
                patient, seed, float(crop_margin_mm)
            )
            paths = {
                "image": f"images/{patient.file_stem}_ct.nii.gz",
                "mask": f"masks/{patient.file_stem}_lesions.nii.gz",
                "tissue": f"tissue/{patient.file_stem}_tissue.nii.gz",
            }
            for key, array in (("image", ct), ("mask", labels), ("tissue", tissue)):
                image = sitk.GetImageFromArray(array)
                image.SetSpacing(spacing)
                image.SetOrigin(origin)
                sitk.WriteImage(image, str(out / paths[key]), True)
            rows.extend(_manifest_rows(patient, paths))
            done += 1
            logger.info("simulated %s (%d/%d)", patient.patient_id, done, total)
            if progress is not None:
                progress(1, total, f"simulating {cohort.name}")

    manifest = pd.DataFrame(rows)
    manifest_path = out / "manifest.csv"
    manifest.to_csv(manifest_path, index=False)
    _write_provenance(out, seed, scale, float(crop_margin_mm), model, plan, manifest)
    return manifest_path


# --------------------------------------------------------------------------------------------
# randomness


def _rng(seed: int, *keys: object) -> np.random.Generator:
    """Independent generator for one (seed, cohort, patient, stream) key: no global state."""
    text = "\x1f".join(str(k) for k in (SIMULATOR_VERSION, seed, *keys))
    digest = hashlib.sha256(text.encode()).digest()
    return np.random.default_rng(np.random.SeedSequence(int.from_bytes(digest[:16], "little")))


def _arm(seed: int, cohort: CohortSpec, number: int) -> str:
    """1:1 randomisation in permuted blocks of four, like a trial's allocation list."""
    block = (number - 1) // 4
    order = _rng(seed, cohort.name, "allocation-block", block).permutation([0, 0, 1, 1])
    return _ARMS[int(order[(number - 1) % 4])]


# --------------------------------------------------------------------------------------------
# clinical and phenotype draws (no images)


def _draw_patient(cohort: CohortSpec, number: int, seed: int, model: GenerativeModel) -> _Patient:
    rng = _rng(seed, cohort.name, number, "clinical")
    arm = _arm(seed, cohort, number)
    sbrt = 1.0 if arm == "ICI+SBRT" else 0.0
    z = float(cohort.response_shift + rng.standard_normal())
    w = model.pdl1_z_weight
    pdl1 = _tps_from_latent(w * z + math.sqrt(1 - w * w) * float(rng.standard_normal()), rng)
    age = int(np.clip(round(64 + 9 * rng.standard_normal()), 35, 88))
    sex = "M" if rng.random() < 0.6 else "F"
    n_lesions = int(rng.choice(np.arange(1, 7), p=np.asarray(cohort.lesion_count_probs)))
    patient = _Patient(
        cohort=cohort,
        number=number,
        patient_id=f"SIM-{cohort.code}-P{number:03d}",
        file_stem=f"SIM_{cohort.code}_P{number:03d}",
        arm=arm,
        z=z,
        pdl1=pdl1,
        age=age,
        sex=sex,
    )
    lesion_rng = _rng(seed, cohort.name, number, "lesions")
    for label in range(1, n_lesions + 1):
        patient.lesions.append(_draw_lesion(label, z, sbrt, model, lesion_rng))
    _draw_survival(patient, sbrt, model, _rng(seed, cohort.name, number, "survival"))
    return patient


def _tps_from_latent(latent: float, rng: np.random.Generator) -> float:
    """Map a standard-normal latent to a PD-L1 TPS (%) with the usual clinical mixture.

    About a third of NSCLC tumours are PD-L1 negative (< 1 %), a third 1-49 % and a third
    >= 50 %; the latent's quantile picks the band so that TPS rises with the latent.
    """
    u = float(special.ndtr(latent))
    if u < 0.35:
        return float(np.round(rng.uniform(0.0, 0.9), 1) if rng.random() < 0.3 else 0.0)
    if u < 0.68:
        return float(round(1 + (u - 0.35) / 0.33 * 48))
    return float(round(50 + (u - 0.68) / 0.32 * 50))


def _draw_lesion(
    label: int, z: float, sbrt: float, model: GenerativeModel, rng: np.random.Generator
) -> _Lesion:
    m = model
    r = m.z_weight * z + m.sbrt_effect * sbrt + m.lesion_sd * float(rng.standard_normal())
    p_pd = float(special.expit(m.pd_intercept - m.pd_slope * r))
    pd_label = int(rng.random() < p_pd)
    a = -r  # aggressiveness
    radius = math.exp(m.radius_log_mean + m.radius_log_slope * a + m.radius_log_sd * rng.normal())
    radius = float(np.clip(radius, *m.radius_range_mm))
    lobulation = float(
        np.clip(m.lobulation_base + m.lobulation_slope * a + m.lobulation_sd * rng.normal(), 0, 0.2)
    )
    rate = max(0.0, m.spicule_rate_base + m.spicule_rate_slope * a)
    n_spicules = int(min(rng.poisson(rate), 10))
    spicule_length = float(rng.uniform(0.4, 0.9))
    heterogeneity = float(
        np.clip(
            m.heterogeneity_base_hu
            + m.heterogeneity_slope_hu * a
            + m.heterogeneity_sd_hu * rng.normal(),
            3.0,
            35.0,
        )
    )
    texture_corr = float(rng.uniform(1.0, 2.5))
    margin = float(
        np.clip(m.margin_base_mm + m.margin_slope_mm * a + m.margin_sd_mm * rng.normal(), 0.12, 1.0)
    )
    nec = float(special.expit(m.necrosis_intercept + m.necrosis_slope * a + 0.6 * rng.normal()))
    nec *= m.necrosis_max_fraction * float(np.clip((radius - 5.0) / 5.0, 0.0, 1.0))
    solid = float(
        np.clip(m.solid_hu_base - m.solid_hu_slope * a + m.solid_hu_sd * rng.normal(), 25, 70)
    )
    return _Lesion(
        label=label,
        latent=float(r),
        pd=pd_label,
        radius_mm=radius,
        lobulation=lobulation,
        n_spicules=n_spicules,
        spicule_length=spicule_length,
        heterogeneity_hu=heterogeneity,
        texture_corr_mm=texture_corr,
        margin_mm=margin,
        necrosis_fraction=nec,
        solid_hu=solid,
        necrosis_hu=m.necrosis_hu,
        shape_seed=int(rng.integers(0, 2**62)),
    )


def _weibull_time(rng: np.random.Generator, shape: float, median: float, lin_pred: float) -> float:
    """Draw from a Weibull PH model: S(t) = exp(-(t/scale)^shape * exp(lin_pred))."""
    scale = median / math.log(2.0) ** (1.0 / shape)
    u = float(rng.uniform(1e-12, 1.0))
    return scale * (-math.log(u) * math.exp(-lin_pred)) ** (1.0 / shape)


def _draw_survival(
    patient: _Patient, sbrt: float, model: GenerativeModel, rng: np.random.Generator
) -> None:
    m = model
    burden = sum(les.volume_ml for les in patient.lesions)
    log_burden = math.log(burden / m.burden_reference_ml)
    high = 1.0 if patient.pdl1 >= 50 else 0.0
    pd_share = sum(les.pd for les in patient.lesions) / len(patient.lesions)
    eta_os = (
        m.os_beta_z * patient.z
        + m.os_beta_burden * log_burden
        + m.os_beta_pdl1_high * high
        + m.os_beta_sbrt * sbrt
    )
    eta_pfs = (
        m.pfs_beta_z * patient.z
        + m.pfs_beta_burden * log_burden
        + m.pfs_beta_pdl1_high * high
        + m.pfs_beta_sbrt * sbrt
        + m.pfs_beta_pd_share * (pd_share - 0.35)
    )
    t_death = _weibull_time(rng, m.os_shape, m.os_median_months, eta_os)
    t_prog = _weibull_time(rng, m.pfs_shape, m.pfs_median_months, eta_pfs)
    accrual = float(rng.uniform(0.0, m.accrual_months))
    censor = min(m.study_months - accrual, float(rng.uniform(0.0, m.dropout_max_months)))
    censor = max(censor, 0.5)
    os_time = min(t_death, censor)
    pfs_true = min(t_prog, t_death)
    pfs_time = min(pfs_true, censor)
    patient.os_time = max(0.1, round(os_time, 2))
    patient.os_event = int(t_death <= censor)
    patient.pfs_time = min(patient.os_time, max(0.1, round(pfs_time, 2)))
    patient.pfs_event = int(pfs_true <= censor)


# --------------------------------------------------------------------------------------------
# anatomy, lesion placement and acquisition


@dataclass
class _Anatomy:
    """Smooth chest-wall geometry of one crop (lateral wall along x, posterior wall along y)."""

    wall_x: float
    wall_x_amp: tuple[float, float]
    wall_x_phase: tuple[float, float]
    wall_y: float
    wall_y_amp: tuple[float, float]
    wall_y_phase: tuple[float, float]
    muscle_mm: float
    fat_mm: float

    def lateral(self, y: np.ndarray | float, z: np.ndarray | float) -> np.ndarray | float:
        (a1, a2), (p1, p2) = self.wall_x_amp, self.wall_x_phase
        return (
            self.wall_x
            + a1 * np.sin(2 * np.pi * y / 70 + p1)
            + a2 * np.sin(2 * np.pi * z / 55 + p2)
        )

    def posterior(self, x: np.ndarray | float, z: np.ndarray | float) -> np.ndarray | float:
        (a1, a2), (p1, p2) = self.wall_y_amp, self.wall_y_phase
        return (
            self.wall_y
            + a1 * np.sin(2 * np.pi * x / 80 + p1)
            + a2 * np.sin(2 * np.pi * z / 65 + p2)
        )


def _draw_anatomy(rng: np.random.Generator) -> _Anatomy:
    return _Anatomy(
        wall_x=float(rng.uniform(13, 17)),
        wall_x_amp=(float(rng.uniform(0.5, 2.0)), float(rng.uniform(0.5, 2.0))),
        wall_x_phase=(float(rng.uniform(0, 2 * np.pi)), float(rng.uniform(0, 2 * np.pi))),
        wall_y=float(rng.uniform(8, 12)),
        wall_y_amp=(float(rng.uniform(0.5, 1.5)), float(rng.uniform(0.5, 1.5))),
        wall_y_phase=(float(rng.uniform(0, 2 * np.pi)), float(rng.uniform(0, 2 * np.pi))),
        muscle_mm=float(rng.uniform(4, 7)),
        fat_mm=float(rng.uniform(2, 5)),
    )


@dataclass
class _Shape:
    """Radial boundary of a lesion: lobulated sphere plus narrow spicules."""

    radius: float
    lobulation: float
    lob_dirs: np.ndarray
    lob_freq: np.ndarray
    lob_phase: np.ndarray
    lob_norm: float
    spike_dirs: np.ndarray
    spike_len: np.ndarray
    spike_power: np.ndarray

    def boundary(self, ux: np.ndarray, uy: np.ndarray, uz: np.ndarray) -> np.ndarray:
        """Boundary radius (mm) along unit directions ``u``."""
        lob = np.zeros(np.broadcast(ux, uy, uz).shape)
        for v, f, p in zip(self.lob_dirs, self.lob_freq, self.lob_phase, strict=True):
            lob += np.cos(f * (ux * v[0] + uy * v[1] + uz * v[2]) + p)
        lob = np.clip(lob / self.lob_norm, -2.0, 2.0)
        rho = self.radius * (1.0 + self.lobulation * lob)
        for v, length, power in zip(self.spike_dirs, self.spike_len, self.spike_power, strict=True):
            cos = np.maximum(ux * v[0] + uy * v[1] + uz * v[2], 0.0)
            rho = rho + length * cos**power
        return rho


def _unit_vectors(rng: np.random.Generator, n: int) -> np.ndarray:
    v = rng.standard_normal((n, 3))
    return v / np.linalg.norm(v, axis=1, keepdims=True)


def _make_shape(lesion: _Lesion) -> _Shape:
    rng = np.random.default_rng(lesion.shape_seed)
    k = 7
    lob_dirs = _unit_vectors(rng, k)
    lob_freq = rng.uniform(2.0, 6.0, k)
    lob_phase = rng.uniform(0, 2 * np.pi, k)
    probe = _unit_vectors(np.random.default_rng(12345), 1500)
    raw = np.zeros(len(probe))
    for v, f, p in zip(lob_dirs, lob_freq, lob_phase, strict=True):
        raw += np.cos(f * probe @ v + p)
    # cap the outer extent so that every lesion fits in the lung of a 100 mm crop
    lobed = lesion.radius_mm * (1.0 + 2.0 * lesion.lobulation)
    spike_budget = max(0.0, MAX_EXTENT_MM - 3.0 * lesion.margin_mm - lobed)
    shape = _Shape(
        radius=lesion.radius_mm,
        lobulation=lesion.lobulation,
        lob_dirs=lob_dirs,
        lob_freq=lob_freq,
        lob_phase=lob_phase,
        lob_norm=float(raw.std()) or 1.0,
        spike_dirs=_unit_vectors(rng, lesion.n_spicules),
        spike_len=np.minimum(
            lesion.radius_mm * lesion.spicule_length * rng.uniform(0.6, 1.0, lesion.n_spicules),
            spike_budget,
        ),
        spike_power=rng.uniform(100.0, 300.0, lesion.n_spicules),
    )
    dirs = np.vstack([probe, shape.spike_dirs]) if lesion.n_spicules else probe
    while True:  # neighbouring spikes add up: shorten them until the lesion fits
        extent = float(shape.boundary(dirs[:, 0], dirs[:, 1], dirs[:, 2]).max())
        lesion.extent_mm = extent + 3.0 * lesion.margin_mm
        if lesion.extent_mm <= MAX_EXTENT_MM or not shape.spike_len.any():
            return shape
        shape.spike_len = shape.spike_len * 0.8


def _place_lesions(
    lesions: list[_Lesion],
    anatomy: _Anatomy,
    rng: np.random.Generator,
    gap_mm: float,
    margin_mm: float,
) -> float:
    """Place lesions inside the lung without overlap; return the volume's z extent (mm).

    Rejection sampling in a slab whose height grows until every lesion fits. Distances to the
    walls are scaled by 1.15 because the wall surfaces are tilted by at most ~10 degrees.
    """
    order = sorted(lesions, key=lambda les: -les.extent_mm)
    inplane_margin = min(margin_mm, 12.0)  # the in-plane crop is fixed, so cap the margin
    height = 30.0 + 8.0 * len(lesions)
    for _attempt in range(60):
        placed: list[_Lesion] = []
        for les in order:
            e = les.extent_mm
            for _try in range(300):
                zc = float(rng.uniform(e, max(e, height - e)))
                xc = float(rng.uniform(0.0, FOV_MM - e - inplane_margin))
                yc = float(rng.uniform(0.0, FOV_MM - e - inplane_margin))
                if xc - anatomy.lateral(yc, zc) < 1.15 * e + 1.5:
                    continue
                if yc - anatomy.posterior(xc, zc) < 1.15 * e + 1.5:
                    continue
                if any(
                    math.dist((xc, yc, zc), o.center_mm) < e + o.extent_mm + gap_mm for o in placed
                ):
                    continue
                les.center_mm = (xc, yc, zc)
                placed.append(les)
                break
            else:
                break
        if len(placed) == len(lesions):
            break
        height += 10.0
    else:  # pragma: no cover - the extent cap guarantees a fit long before this
        raise DataError(
            f"could not place {len(lesions)} simulated lesions without overlap; "
            "lower crop_margin_mm"
        )
    low = min(les.center_mm[2] - les.extent_mm for les in lesions) - margin_mm
    for les in lesions:
        x, y, z = les.center_mm
        les.center_mm = (x, y, z - low)
    return max(les.center_mm[2] + les.extent_mm for les in lesions) + margin_mm


def _smooth_field(
    rng: np.random.Generator, shape: tuple[int, ...], sigma_vox: tuple[float, ...]
) -> np.ndarray:
    """Unit-SD Gaussian random field (texture of lung, fat, lesions, and noise)."""
    white = rng.standard_normal(shape, dtype=np.float32)
    field_ = ndimage.gaussian_filter(white, sigma_vox, truncate=3.0)
    sd = float(field_.std())
    return field_ / (sd if sd > 0 else 1.0)


def _render_patient(
    patient: _Patient, seed: int, margin_mm: float
) -> tuple[np.ndarray, np.ndarray, np.ndarray, tuple[float, float, float], tuple[float, ...]]:
    """Build the true anatomy on a fine grid, then acquire it with the cohort's profile.

    Returns arrays in (z, y, x) order: CT (int16 HU), lesion label map (uint8), tissue map
    (uint8), plus the SimpleITK spacing (x, y, z) and origin.
    """
    acq = patient.cohort.acquisition
    rng = _rng(seed, patient.cohort.name, patient.number, "image")
    anatomy = _draw_anatomy(rng)
    shapes = [_make_shape(les) for les in patient.lesions]
    block = round(acq.slice_thickness_mm / FINE_DZ_MM)
    gap = max(4.0, acq.slice_thickness_mm + 1.0)
    height = _place_lesions(patient.lesions, anatomy, rng, gap, margin_mm)

    dxy = acq.pixel_spacing_mm
    nxy = round(FOV_MM / dxy)
    nz = math.ceil(height / acq.slice_thickness_mm) * block
    xs = ((np.arange(nxy) + 0.5) * dxy).astype(np.float32)
    zs = ((np.arange(nz) + 0.5) * FINE_DZ_MM).astype(np.float32)
    gx = xs[None, None, :]
    gy = xs[None, :, None]
    gz = zs[:, None, None]
    shape3 = (nz, nxy, nxy)

    # body: air | fat | muscle | lung along x, muscle behind the posterior wall
    lateral = anatomy.lateral(gy, gz)
    lung = (gx > lateral) & (gy > anatomy.posterior(gx, gz))
    skin = lateral - anatomy.muscle_mm - anatomy.fat_mm
    tissue = np.full(shape3, TISSUE_CODES["muscle"], dtype=np.uint8)
    tissue[np.broadcast_to(gx < skin, shape3)] = TISSUE_CODES["air"]
    fat = np.broadcast_to((gx >= skin) & (gx < skin + anatomy.fat_mm), shape3)
    tissue[fat & ~lung] = TISSUE_CODES["fat"]
    tissue[lung] = TISSUE_CODES["lung"]

    sig = (1.5 / FINE_DZ_MM, 1.5 / dxy, 1.5 / dxy)
    texture = _smooth_field(rng, shape3, sig)
    hu = np.empty(shape3, dtype=np.float32)
    hu[...] = 45.0
    hu[tissue == TISSUE_CODES["air"]] = -1000.0
    is_fat = tissue == TISSUE_CODES["fat"]
    hu[is_fat] = -100.0 + 8.0 * texture[is_fat]
    # lung parenchyma: -850 HU, denser posteriorly (gravity-dependent), with texture
    posterior_gradient = 40.0 * np.exp(-(np.broadcast_to(gy, shape3)[lung] - anatomy.wall_y) / 15)
    hu[lung] = -860.0 + posterior_gradient + 28.0 * texture[lung]
    # partial volume at the pleura: blend lung and wall over one voxel
    depth = np.minimum(gx - lateral, gy - anatomy.posterior(gx, gz))
    edge = np.abs(depth) < dxy
    frac = np.clip(depth[edge] / dxy + 0.5, 0.0, 1.0)
    hu[edge] = frac * (-820.0 + 28.0 * texture[edge]) + (1 - frac) * 45.0

    vessel = _vessels(rng, anatomy, shape3, dxy, nz * FINE_DZ_MM, lung)
    hu += vessel * (40.0 - hu)
    tissue[(vessel >= 0.5) & lung] = TISSUE_CODES["vessel"]

    fine_labels: list[tuple[tuple[slice, slice, slice], np.ndarray]] = []
    for les, shp in zip(patient.lesions, shapes, strict=True):
        box, occ = _render_lesion(hu, les, shp, rng, (xs, zs, dxy), block)
        fine_labels.append((box, occ))
        tissue[box][occ >= 0.5] = TISSUE_CODES["lesion"]

    # acquisition: in-plane PSF, slice averaging, correlated noise, calibration offset
    sigma_xy = acq.kernel_sigma_mm / dxy
    hu = ndimage.gaussian_filter(hu, (0.0, sigma_xy, sigma_xy))
    nzf = nz // block
    hu = hu.reshape(nzf, block, nxy, nxy).mean(axis=1)
    noise_sigma = acq.noise_corr_mm / dxy
    noise = _smooth_field(rng, hu.shape, (0.3, noise_sigma, noise_sigma))
    hu = hu + acq.noise_sd_hu * noise + acq.hu_offset
    ct = np.clip(np.rint(hu), -1024, 3071).astype(np.int16)

    labels = np.zeros(ct.shape, dtype=np.uint8)
    for les, (box, occ) in zip(patient.lesions, fine_labels, strict=True):
        zsl, ysl, xsl = box
        coarse = occ.reshape(occ.shape[0] // block, block, *occ.shape[1:]).mean(axis=1)
        sel = coarse >= 0.5
        if not sel.any():  # a tiny lesion between slice centres: keep its densest voxel
            sel = coarse == coarse.max()
        target = labels[zsl.start // block : zsl.stop // block, ysl, xsl]
        target[sel] = les.label

    tissue_c = tissue[block // 2 :: block].copy()
    tissue_c[tissue_c == TISSUE_CODES["lesion"]] = TISSUE_CODES["lung"]
    tissue_c[labels > 0] = TISSUE_CODES["lesion"]
    spacing = (dxy, dxy, acq.slice_thickness_mm)
    origin = (-FOV_MM / 2 + dxy / 2, -FOV_MM / 2 + dxy / 2, acq.slice_thickness_mm / 2)
    return ct, labels, tissue_c, spacing, origin


def _vessels(
    rng: np.random.Generator,
    anatomy: _Anatomy,
    shape3: tuple[int, int, int],
    dxy: float,
    height: float,
    lung: np.ndarray,
) -> np.ndarray:
    """Tapering, meandering vessels entering from the medial (hilar) side; soft occupancy.

    Each vessel is a random walk whose direction drifts (a random walk on the direction) and
    whose radius shrinks 1.5 % per millimetre; all centre-line points are stamped at once
    with a fixed stencil, which is much faster than looping over points.
    """
    n = 4 + round(height / 8)
    n_steps = 115  # radius 2.8 mm shrinks below 0.5 mm within this many 1 mm steps
    points, radii = [], []
    for _ in range(n):
        start = np.array([rng.uniform(0, height), rng.uniform(anatomy.wall_y + 5, FOV_MM), FOV_MM])
        heading = np.array([rng.normal(0, 0.3), rng.normal(0, 0.3), -1.0])
        drift = np.cumsum(rng.normal(0, 0.12, (n_steps, 3)), axis=0)
        dirs = heading / np.linalg.norm(heading) + drift
        dirs /= np.linalg.norm(dirs, axis=1, keepdims=True)
        path = start + np.cumsum(dirs, axis=0)
        radius = float(rng.uniform(1.2, 2.8)) * 0.985 ** np.arange(1, n_steps + 1)
        inside = (
            ((path[:, 0] >= 0) & (path[:, 0] < height) & (path[:, 1] >= 0) & (path[:, 1] < FOV_MM))
            & (path[:, 2] >= 0)
            & (radius > 0.5)
        )
        stop = int(np.argmin(inside)) if not inside.all() else n_steps
        points.append(path[:stop])
        radii.append(radius[:stop])
    occ = np.zeros(shape3, dtype=np.float32)
    pts = np.concatenate(points)
    rad = np.concatenate(radii).astype(np.float32)
    if len(pts) == 0:
        return occ
    steps = np.array([FINE_DZ_MM, dxy, dxy])
    half = np.ceil(3.9 / steps).astype(int)
    offs = np.stack(
        np.meshgrid(*(np.arange(-h, h + 1) for h in half), indexing="ij"), axis=-1
    ).reshape(-1, 3)
    base = np.floor(pts / steps).astype(int)  # voxel holding each point
    frac = ((base + 0.5) * steps - pts).astype(np.float32)  # its centre relative to the point
    offs_mm = (offs * steps).astype(np.float32)
    d2 = np.zeros((len(pts), len(offs)), dtype=np.float32)
    for axis in range(3):
        d2 += (frac[:, axis, None] + offs_mm[None, :, axis]) ** 2
    near = d2 < (rad[:, None] + 0.5 * dxy) ** 2  # only these voxels get any occupancy
    p_i, s_i = np.nonzero(near)
    idx = base[p_i] + offs[s_i]
    value = np.clip((rad[p_i] - np.sqrt(d2[p_i, s_i])) / dxy + 0.5, 0.0, 1.0)
    keep = np.all((idx >= 0) & (idx < np.array(shape3)), axis=1)
    flat = np.ravel_multi_index(tuple(idx[keep].T), shape3)
    np.maximum.at(occ.reshape(-1), flat, value[keep])
    occ *= lung
    return occ


def _render_lesion(
    hu: np.ndarray,
    les: _Lesion,
    shape: _Shape,
    rng: np.random.Generator,
    grid: tuple[np.ndarray, np.ndarray, float],
    block: int,
) -> tuple[tuple[slice, slice, slice], np.ndarray]:
    """Paint one lesion into ``hu`` (in place); return its box and fine occupancy there.

    The z range of the box is aligned to the slice blocks so the occupancy can be averaged
    into the acquired slices to make the mask.
    """
    xs, zs, dxy = grid
    cx, cy, cz = les.center_mm
    reach = les.extent_mm + 2.0
    nz = len(zs)
    z0 = max(0, math.floor((cz - reach) / FINE_DZ_MM) // block * block)
    z1 = min(nz, -(-math.ceil((cz + reach) / FINE_DZ_MM) // block) * block)
    y0, y1 = max(0, math.floor((cy - reach) / dxy)), min(len(xs), math.ceil((cy + reach) / dxy))
    x0, x1 = max(0, math.floor((cx - reach) / dxy)), min(len(xs), math.ceil((cx + reach) / dxy))
    box = (slice(z0, z1), slice(y0, y1), slice(x0, x1))
    dz = (zs[z0:z1] - cz)[:, None, None]
    dy = (xs[y0:y1] - cy)[None, :, None]
    dx = (xs[x0:x1] - cx)[None, None, :]
    d = np.sqrt(dx * dx + dy * dy + dz * dz) + 1e-4
    ux, uy, uz = dx / d, dy / d, dz / d
    rho = shape.boundary(ux, uy, uz)
    occ = special.expit(-(d - rho) / les.margin_mm).astype(np.float32)

    corr = les.texture_corr_mm
    tex = _smooth_field(rng, d.shape, (corr / FINE_DZ_MM, corr / dxy, corr / dxy))
    inside = les.solid_hu + les.heterogeneity_hu * tex
    if les.necrosis_fraction > 0:
        core = les.necrosis_fraction ** (1.0 / 3.0)
        nec = special.expit(-(d - core * rho) / 0.8)
        necrotic = les.necrosis_hu + 0.4 * les.heterogeneity_hu * tex
        inside = inside * (1 - nec) + necrotic * nec
    region = hu[box]
    region += occ * (inside - region)
    return box, occ


# --------------------------------------------------------------------------------------------
# outputs


def _manifest_rows(patient: _Patient, paths: dict[str, str]) -> list[dict[str, object]]:
    acq = patient.cohort.acquisition
    rows = []
    for les in patient.lesions:
        rows.append(
            {
                "patient_id": patient.patient_id,
                "lesion_id": f"{patient.patient_id}-L{les.label}",
                "cohort": patient.cohort.name,
                "image_path": paths["image"],
                "mask_path": paths["mask"],
                "mask_label": les.label,
                "pd": les.pd,
                "os_time": patient.os_time,
                "os_event": patient.os_event,
                "pfs_time": patient.pfs_time,
                "pfs_event": patient.pfs_event,
                "pdl1": patient.pdl1,
                "arm": patient.arm,
                "age": patient.age,
                "sex": patient.sex,
                "simulated": True,
                "latent_response": round(les.latent, 4),
                "latent_patient_response": round(patient.z, 4),
                "n_lesions": len(patient.lesions),
                "tissue_path": paths["tissue"],
                "kernel": acq.kernel,
                "pixel_spacing_mm": acq.pixel_spacing_mm,
                "slice_thickness_mm": acq.slice_thickness_mm,
                "true_radius_mm": round(les.radius_mm, 3),
                "true_volume_ml": round(les.volume_ml, 4),
                "true_lobulation": round(les.lobulation, 4),
                "true_spicules": les.n_spicules,
                "true_heterogeneity_hu": round(les.heterogeneity_hu, 3),
                "true_margin_mm": round(les.margin_mm, 4),
                "true_necrosis_fraction": round(les.necrosis_fraction, 4),
                "true_solid_hu": round(les.solid_hu, 2),
            }
        )
    return rows


def _write_provenance(
    out: Path,
    seed: int,
    scale: float,
    margin: float,
    model: GenerativeModel,
    plan: list[tuple[CohortSpec, int]],
    manifest: pd.DataFrame,
) -> None:
    settings = {
        "simulated": True,
        "simulator_version": SIMULATOR_VERSION,
        "seed": seed,
        "scale": scale,
        "crop_margin_mm": margin,
        "fov_mm": FOV_MM,
        "fine_dz_mm": FINE_DZ_MM,
        "tissue_codes": TISSUE_CODES,
        "cohorts": [{**asdict(c), "n_patients_written": n} for c, n in plan],
        "generative_model": asdict(model),
    }
    (out / "simulation.json").write_text(json.dumps(settings, indent=2) + "\n")
    lines = [
        "SIMULATED DATA - NOT FROM ANY PATIENT",
        "",
        "Every image, mask and clinical value in this folder was generated by",
        f"irtscope.imaging.simulate_cohorts (simulator version {SIMULATOR_VERSION}, seed {seed},",
        f"scale {scale}). No real patient, trial or scanner data was used. The cohorts are only",
        "shaped like the PEMBRO-RT, NIVORAD and MDACC trials (sizes, arms); their contents are",
        "synthetic. Do not use them for clinical conclusions.",
        "",
        "How: each patient has a latent immune response z; each lesion a latent response",
        "r = a*z + b*[ICI+SBRT] + noise. Per-lesion progressive disease (pd) is drawn with",
        "P = sigmoid(c0 - c1*r); lesion size, lobulation, spiculation, internal heterogeneity,",
        "margin width, necrosis and density depend on -r plus noise. Overall and",
        "progression-free survival are Weibull times driven by z, lesion burden, PD-L1 and arm",
        "(PFS also by the share of PD lesions), with administrative and drop-out censoring.",
        "Volumes are 100 mm crops of a hemithorax (air, fat, muscle, lung, vessels, lesions)",
        "acquired with a cohort-specific pixel spacing, slice thickness, kernel blur, noise and",
        "HU offset. Full description: docs/simulator.md in the irtscope repository; all",
        "settings: simulation.json. Ground-truth columns (latent_*, true_*) in manifest.csv",
        "are for diagnostics only and must not be used as model inputs.",
        "",
        "Contents:",
    ]
    for cohort, _n in plan:
        sub = manifest[manifest["cohort"] == cohort.name]
        acq = cohort.acquisition
        lines.append(
            f"  {cohort.name}: {sub['patient_id'].nunique()} patients, {len(sub)} lesions, "
            f"PD {sub['pd'].mean():.0%}; {acq.pixel_spacing_mm} mm pixels, "
            f"{acq.slice_thickness_mm} mm slices, {acq.kernel} kernel, "
            f"noise SD {acq.noise_sd_hu} HU, offset {acq.hu_offset:+} HU"
        )
    lines += [
        "",
        "Files: images/SIM_*_ct.nii.gz (int16 HU), masks/SIM_*_lesions.nii.gz (label map, value",
        "= manifest mask_label), tissue/SIM_*_tissue.nii.gz (0 air, 1 fat, 2 muscle, 3 lung,",
        "4 vessel, 5 lesion), manifest.csv (simulated = True on every row).",
    ]
    (out / "SIMULATED.txt").write_text("\n".join(lines) + "\n")
