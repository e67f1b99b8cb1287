"""Every public package declares ``__all__`` and every name in it exists."""

import importlib

import pytest

PACKAGES = ["irtscope", "irtscope.trials", "irtscope.imaging", "irtscope.report"]


@pytest.mark.parametrize("name", PACKAGES)
def test_all_names_exist(name: str) -> None:
    module = importlib.import_module(name)
    assert isinstance(module.__all__, list)
    for member in module.__all__:
        assert hasattr(module, member), f"{name}.__all__ names missing {member!r}"
        assert not member.startswith("_") or member == "__version__"
