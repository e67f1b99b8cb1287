"""Radiomics parameter presets: every shipped YAML validates, typos and bad values do not."""

from __future__ import annotations

from pathlib import Path

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
