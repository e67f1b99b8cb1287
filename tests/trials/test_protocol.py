"""Protocol YAML validation: the preset loads, bad keys and values raise ConfigError."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest
import yaml

from irtscope import ConfigError
from irtscope.trials import Protocol, QuerySpec, available_protocols, load_dictionary, load_protocol
from irtscope.trials._protocol import _dictionary_dir, _preset_dir

CONTRACT_CRITERIA = [
    "duplicate_record",
    "not_interventional",
    "outside_window",
    "not_nsclc",
    "other_immunotherapy",
    "other_combined_therapy",
    "no_radiotherapy",
    "no_immunotherapy",
    "aim_quality_of_life",
    "aim_biomarker",
    "aim_organoid",
    "duplicate_content",
]


def _preset_dict() -> dict:
    return yaml.safe_load((_preset_dir() / "nsclc-irt.yaml").read_text(encoding="utf-8"))


def test_preset_matches_reference_study() -> None:
    p = load_protocol("nsclc-irt")
    assert isinstance(p, Protocol)
    assert [c.id for c in p.criteria] == CONTRACT_CRITERIA
    assert p.search_date == dt.date(2024, 6, 24)
    assert p.window == (dt.date(2014, 1, 1), dt.date(2024, 6, 24))
    assert [x.label for x in p.periods] == ["2014-2017", "2018-2020", "2021-2024"]
    assert all(isinstance(q, QuerySpec) for q in p.queries)
    assert any(q.cond == "NSCLC" and q.term == "radiation and immunotherapy" for q in p.queries)
    assert p.study_types == ("INTERVENTIONAL",)
    assert p.period_of(2019) == "2018-2020" and p.period_of(2013) is None


@pytest.mark.parametrize("name", available_protocols())
def test_every_preset_validates(name: str) -> None:
    load_protocol(name)


@pytest.mark.parametrize("path", sorted(_dictionary_dir().glob("*.yaml")), ids=lambda p: p.stem)
def test_every_dictionary_validates(path: Path) -> None:
    d = load_dictionary(path.stem)
    assert d.entries


def test_unknown_key_is_named(tmp_path: Path) -> None:
    data = _preset_dict()
    data["serch_date"] = "2024-06-24"
    path = tmp_path / "p.yaml"
    path.write_text(yaml.safe_dump(data), encoding="utf-8")
    with pytest.raises(ConfigError, match="serch_date"):
        load_protocol(path)


def test_unknown_criterion_key_and_bad_rule(tmp_path: Path) -> None:
    data = _preset_dict()
    data["criteria"][2]["dictonary"] = "nsclc"
    path = tmp_path / "p.yaml"
    path.write_text(yaml.safe_dump(data), encoding="utf-8")
    with pytest.raises(ConfigError, match="dictonary"):
        load_protocol(path)
    data = _preset_dict()
    data["criteria"][2]["rule"] = "magic"
    path.write_text(yaml.safe_dump(data), encoding="utf-8")
    with pytest.raises(ConfigError, match="rule"):
        load_protocol(path)


def test_bad_values(tmp_path: Path) -> None:
    data = _preset_dict()
    data["date_field"] = "last_update"
    path = tmp_path / "p.yaml"
    path.write_text(yaml.safe_dump(data), encoding="utf-8")
    with pytest.raises(ConfigError, match="date_field"):
        load_protocol(path)
    data = _preset_dict()
    data["window_start"] = "2030-01-01"
    path.write_text(yaml.safe_dump(data), encoding="utf-8")
    with pytest.raises(ConfigError, match="window"):
        load_protocol(path)


def test_missing_preset_and_dictionary(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="unknown protocol"):
        load_protocol("no-such-preset")
    data = _preset_dict()
    data["criteria"][2]["dictionary"] = "no_such_dictionary"
    path = tmp_path / "p.yaml"
    path.write_text(yaml.safe_dump(data), encoding="utf-8")
    with pytest.raises(ConfigError, match="no_such_dictionary"):
        load_protocol(path)


def test_user_protocol_with_own_dictionary(tmp_path: Path) -> None:
    """Another condition without touching code: a local dictionary next to the protocol."""
    (tmp_path / "melanoma.yaml").write_text(
        "entries:\n  - {label: melanoma, terms: [melanoma, melanomas]}\n", encoding="utf-8"
    )
    data = _preset_dict()
    data["name"] = "melanoma-irt"
    index = [c["id"] for c in data["criteria"]].index("not_nsclc")
    data["criteria"][index] = {
        "id": "not_melanoma",
        "rule": "condition",
        "dictionary": "melanoma",
        "label": "Not melanoma",
    }
    data["date_field"] = "start"
    path = tmp_path / "melanoma-irt.yaml"
    path.write_text(yaml.safe_dump(data), encoding="utf-8")
    p = load_protocol(path)
    assert p.criteria[index].id == "not_melanoma"
    assert load_dictionary("melanoma", p.base_dir).entries[0].label == "melanoma"
    assert p.fingerprint() != load_protocol("nsclc-irt").fingerprint()


def test_protocol_is_frozen() -> None:
    p = load_protocol("nsclc-irt")
    with pytest.raises(ValueError):
        p.name = "x"  # type: ignore[misc]


def test_bad_dictionary_pattern(tmp_path: Path) -> None:
    from irtscope.trials._text import Lexicon

    (tmp_path / "bad.yaml").write_text(
        "entries:\n  - {label: x, patterns: ['(a)b']}\n", encoding="utf-8"
    )
    with pytest.raises(ConfigError, match="capturing"):
        Lexicon([load_dictionary("bad", tmp_path)])
