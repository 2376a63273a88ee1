"""Bundles shipped inside the package: ``pump`` (demo default) and ``cmapss-fd001``.

Retrain both with ``python -m models.retrain_shipped`` (deterministic for its seeds).
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path

from agent.errors import DatasetError

#: Names of the bundles shipped in this directory.
SHIPPED = ("pump", "cmapss-fd001")
DEFAULT = "pump"


def default_bundle_path(name: str = DEFAULT) -> Path:
    """Filesystem path of a shipped bundle directory (``pump`` or ``cmapss-fd001``).

    The package is installed as plain files (wheel or editable), so the resource is a
    real directory that :func:`models.bundle.load_bundle` can read.
    """
    if name not in SHIPPED:
        raise DatasetError(f"no shipped bundle named {name!r} (shipped: {', '.join(SHIPPED)})")
    ref = resources.files(__package__).joinpath(name)
    path = Path(str(ref))
    if not (path / "manifest.json").is_file():
        raise DatasetError(
            f"shipped bundle {name!r} is missing at {path}",
            hint="run `python -m models.retrain_shipped`",
        )
    return path


__all__ = ["DEFAULT", "SHIPPED", "default_bundle_path"]
