"""irtscope: immunoradiotherapy (iRT) research toolkit for non-small cell lung cancer.

Two halves share one package: :mod:`irtscope.trials` (the ClinicalTrials.gov landscape) and
:mod:`irtscope.imaging` (radiomics and deep-learning outcome models).
"""

from irtscope._errors import (
    ConfigError,
    DataError,
    FetchError,
    GeometryError,
    IrtscopeError,
)

__version__ = "0.1.0"

__all__ = [
    "ConfigError",
    "DataError",
    "FetchError",
    "GeometryError",
    "IrtscopeError",
    "__version__",
]
