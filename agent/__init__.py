"""edgewatch: predictive-maintenance agent for factory gateways."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("edgewatch")
except PackageNotFoundError:  # pragma: no cover - running from a bare checkout
    __version__ = "0.0.0+unknown"

__all__ = ["__version__"]
