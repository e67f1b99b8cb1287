"""Exception tree.

Every error irtscope raises on purpose derives from :class:`IrtscopeError` *and* from a
built-in, so callers can catch either (the scikit-survival habit)::

    IrtscopeError
     ├── ConfigError(ValueError)      bad YAML, unknown keys, out-of-range settings
     ├── DataError(ValueError)        malformed records/files, bad manifests, empty masks
     │    └── GeometryError           image/mask spacing, origin, direction or size mismatch
     └── FetchError(ConnectionError)  registry unreachable, retries exhausted, truncated bodies

Messages name the offending record/file/value and say how to fix it. The library never prints
or exits; the CLI turns an ``IrtscopeError`` into one line on stderr and exit code 1.
"""


class IrtscopeError(Exception):
    """Base class of all irtscope errors."""


class ConfigError(IrtscopeError, ValueError):
    """A configuration file or setting is invalid."""


class DataError(IrtscopeError, ValueError):
    """Input data (registry record, manifest row, image, mask) is malformed."""


class GeometryError(DataError):
    """An image and its mask do not share geometry, or a mask is empty/outside the image."""


class FetchError(IrtscopeError, ConnectionError):
    """The registry could not be reached or answered with something unusable."""
