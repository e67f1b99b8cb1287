"""Radiomics parameter presets: every shipped YAML validates, typos and bad values do not."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import yaml

from irtscope import ConfigError
from irtscope.imaging import RadiomicsParams, load_params
from irtscope.imaging._extract import _new_extractor
from irtscope.imaging._params import PRESETS


@pytest.mark.parametrize("name", sorted(PRESETS))
def test_every_preset_validates_here_and_in_pyradiomics(name: str) -> None:
    params = load_params(name)
    assert isinstance(params, RadiomicsParams)
    assert params.name == name
    # pyradiomics' own pykwalify schema must accept what we hand it.
    extractor = _new_extractor(params)
    assert extractor.enabledImagetypes == {"Original": {}}
    assert set(params.feature_class) >= {"shape", "firstorder", "glcm"}


def test_ibsi_presets_match_the_ibsi_configurations() -> None:
    a, b = load_params("ibsi-a").setting, load_params("ibsi-b")
    assert a.force_2d and a.bin_width == 25 and a.resegment_range == (-500, 400)
    assert a.resampled_pixel_spacing is None
    assert b.setting.force_2d and b.setting.bin_count == 32
    assert b.irtscope.interpolation is not None
    assert b.irtscope.interpolation.spacing == (2, 2, 0)
    for name in ("ibsi-c", "ibsi-d", "ibsi-e"):
        params = load_params(name)
        assert not params.setting.force_2d
        assert params.irtscope.interpolation.spacing == (2, 2, 2)
    assert load_params("ibsi-e").irtscope.interpolation.image_interpolator == "bspline"
    assert load_params("ibsi-digital").setting.bin_width == 1


def _write(tmp_path: Path, data: dict) -> Path:
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


BASE = {"imageType": {"Original": {}}, "featureClass": {"firstorder": None}, "setting": {}}


def test_yaml_file_loads_and_round_trips(tmp_path: Path) -> None:
    data = {**BASE, "setting": {"binWidth": 10, "resegmentRange": [-1000, 400]}}
    params = load_params(_write(tmp_path, data))
    assert params.setting.bin_width == 10
    assert params.to_pyradiomics()["setting"] == {"binWidth": 10.0, "resegmentRange": [-1000, 400]}
    assert load_params(params.to_pyradiomics()).digest == params.digest


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({**BASE, "settings": {}}, "settings"),  # typo in a top-level key
        ({**BASE, "setting": {"binwidth": 25}}, "binwidth"),  # typo in a setting
        ({**BASE, "setting": {"binWidth": -5}}, "binWidth"),
        ({**BASE, "setting": {"binWidth": 25, "binCount": 32}}, "not both"),
        ({**BASE, "setting": {"resegmentRange": [400, -500]}}, "lower < upper"),
        ({**BASE, "setting": {"interpolator": "sitkCubic"}}, "sitkCubic"),
        ({**BASE, "setting": {"weightingNorm": "cosine"}}, "weightingNorm"),
        ({**BASE, "imageType": {"Wavelets": {}}}, "Wavelets"),
        ({**BASE, "featureClass": {"glcm": ["JointAvg"]}}, "JointAvg"),
        ({**BASE, "featureClass": {"texture": None}}, "texture"),
        ({**BASE, "irtscope": {"interpolaton": {}}}, "interpolaton"),
        (
            {
                **BASE,
                "setting": {"resampledPixelSpacing": [1, 1, 1]},
                "irtscope": {"interpolation": {"spacing": [2, 2, 2]}},
            },
            "keep one",
        ),
        ({**BASE, "irtscope": {"interpolation": {"spacing": [0, 0, 0]}}}, "spacing"),
    ],
)
def test_invalid_parameters_raise_config_error(tmp_path: Path, data: dict, message: str) -> None:
    path = _write(tmp_path, data)
    with pytest.raises(ConfigError, match=message) as info:
        load_params(path)
    assert str(path) in str(info.value)  # the message names the file


def test_unknown_preset_or_missing_file() -> None:
    with pytest.raises(ConfigError, match="not a preset"):
        load_params("ibsi-z")
    with pytest.raises(ConfigError, match="not a preset"):
        load_params("no/such/params.yaml")


def test_not_a_mapping(tmp_path: Path) -> None:
    path = tmp_path / "list.yaml"
    path.write_text("- binWidth\n")
    with pytest.raises(ConfigError, match="mapping"):
        load_params(path)


def test_digest_tracks_settings_that_change_features() -> None:
    a = load_params("ibsi-a")
    assert load_params("ibsi-a").digest == a.digest
    assert a.with_settings(binWidth=10).digest != a.digest
    b = load_params("ibsi-b")
    moved = b.model_copy(
        update={
            "irtscope": b.irtscope.model_copy(
                update={
                    "interpolation": b.irtscope.interpolation.model_copy(
                        update={"mask_threshold": 0.4}
                    )
                }
            )
        }
    )
    assert moved.digest != b.digest  # irtscope's own resampling is part of the key


def test_with_settings_revalidates() -> None:
    with pytest.raises(ConfigError, match="binWidth"):
        load_params("ibsi-a").with_settings(binWidth=0)


def test_engine_and_irtscope_resegmentation(tmp_path: Path) -> None:
    assert load_params("lung-ct").engine == "pyradiomics"
    data = yaml.safe_load(
        (Path(__file__).parents[2] / "src/irtscope/imaging/params/ibsi_e.yaml").read_text()
    )
    mirp = load_params({**data, "engine": "mirp"})
    assert mirp.engine == "mirp" and mirp.mirp["ivh_discretisation_n_bins"] == 1000
    assert mirp.digest != load_params("ibsi-e").digest  # the engine is part of the cache key
    with pytest.raises(ConfigError, match="engine"):
        load_params({**data, "engine": "cerr"})
    e = load_params("ibsi-e")
    assert e.irtscope.resegmentation.range == (-1000, 400)
    assert e.irtscope.resegmentation.sigma == 3
    assert e.setting.resegment_range is None  # irtscope re-segments, not pyradiomics
    both = {**data, "setting": {**data["setting"], "resegmentRange": [-500, 400]}}
    with pytest.raises(ConfigError, match="both re-segment"):
        load_params(both)
    for bad in ({}, {"range": [400, -1000]}, {"range": [None, None]}, {"sigma": 0}):
        broken = {**data, "irtscope": {**data["irtscope"], "resegmentation": bad}}
        with pytest.raises(ConfigError, match="resegmentation"):
            load_params(broken)
    assert load_params("ibsi-c").irtscope.bin_origin == "ibsi"
    assert load_params("lung-ct").irtscope.bin_origin == "zero"


def test_resegmentation_window_applies_range_then_outlier_filter() -> None:
    from irtscope.imaging._params import Resegmentation
    from irtscope.imaging._radiomics_preprocess import resegmentation_window

    values = np.array([-1500.0, -20.0, -10.0, 0.0, 10.0, 20.0, 2000.0])
    lower, upper = resegmentation_window(values, Resegmentation(range=(-1000, 400)))
    assert (lower, upper) == (-1000, 400)
    # IBSI order: the outlier filter sees only the voxels the range kept
    kept = values[1:-1]
    lower, upper = resegmentation_window(values, Resegmentation(range=(-1000, 400), sigma=1))
    assert lower == pytest.approx(kept.mean() - kept.std())
    assert upper == pytest.approx(kept.mean() + kept.std())
    lower, upper = resegmentation_window(values, Resegmentation(sigma=3))
    assert lower == pytest.approx(values.mean() - 3 * values.std())


def test_mirp_settings_translate_the_same_yaml() -> None:
    import SimpleITK as sitk

    from irtscope.imaging._mirp_engine import mirp_settings, mirp_tag

    image = sitk.Image(8, 8, 4, sitk.sitkFloat32)
    image.SetSpacing((0.977, 0.977, 3.0))
    e = mirp_settings(load_params("ibsi-e"), image)
    assert e["resegmentation_intensity_range"] == [-1000.0, 400.0]
    assert e["resegmentation_sigma"] == 3.0
    assert e["spline_order"] == 3 and e["new_spacing"] == [2.0, 2.0, 2.0]
    assert e["base_discretisation_method"] == "fixed_bin_number"
    assert e["ivh_discretisation_n_bins"] == 1000  # from the preset's mirp section
    b = mirp_settings(load_params("ibsi-b"), image)
    assert b["by_slice"] and b["new_spacing"] == 2.0 and b["spline_order"] == 1
    assert "2d_average" in b["glcm_spatial_method"]
    c = mirp_settings(load_params("ibsi-c"), image)
    assert c["base_discretisation_method"] == "fixed_bin_size"
    lung = mirp_settings(load_params("lung-ct"), image)
    assert lung["base_discretisation_method"] == "fixed_bin_size_pyradiomics"
    assert lung["ibsi_compliant"] is False and lung["new_spacing"] == [1.0, 1.0, 1.0]
    d = mirp_settings(load_params("ibsi-d"), image)
    assert d["resegmentation_sigma"] == 3.0 and "resegmentation_intensity_range" not in d
    assert mirp_tag("cm_joint_avg_d1_3d_v_mrg_fbs_w25.0") == "cm_joint_avg_3D_comb"
    assert mirp_tag("cm_joint_avg_d1_2.5d_d_mrg_fbn_n32") == "cm_joint_avg_2_5D_avg"
    assert mirp_tag("ngl_lde_d1_a0.0_2d_fbn_n32") == "ngl_lde_2D"
    assert mirp_tag("szm_sze_2.5d_fbs_w25.0") == "szm_sze_2_5D"
    assert mirp_tag("ih_mean_fbs_w25.0") == "ih_mean"
    assert mirp_tag("morph_volume") == "morph_volume"
    relative = load_params("ibsi-a").with_settings(resegmentMode="relative", resegmentRange=[0.1])
    with pytest.raises(ConfigError, match="no MIRP equivalent"):
        mirp_settings(relative, image)
