"""Where the folders shipped with hiscale are (bundled priors, demo data)."""

from __future__ import annotations

from pathlib import Path

__all__ = ["bundled"]

_PACKAGE = Path(__file__).resolve().parent


def bundled(folder: str) -> list[Path]:
    """Return the candidate locations of the top-level ``folder``, in order.

    A wheel carries it inside the package as ``hiscale/_<folder>`` (the build's
    force-include, see pyproject.toml); a source checkout or editable install
    has it at the repository root.

    Parameters
    ----------
    folder : str
        ``"models"`` (bundled priors) or ``"data"`` (demo data).

    Returns
    -------
    list of pathlib.Path
        The wheel location first, then the repository root's; neither is
        checked for existence.
    """
    return [_PACKAGE / f"_{folder}", _PACKAGE.parent.parent / folder]
