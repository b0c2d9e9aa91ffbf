"""Priors as data: the :class:`Prior` of one family, weak defaults, population priors on disk.

A family's parameters are the law's unit-free vector ``z`` (log share ratios
``u_a, u_b``, log exponents, optional ``gamma``), its loss scale
``log_scale`` (never pooled) and two noise scales:

* ``z ~ MVN(loc, chol chol^T)`` (non-centred in the model);
* ``log_scale ~ Normal(ln median(loss) + log_scale_shift, log_scale_sd)``,
  centred on the family's own data because loss units differ across
  families (nats/token vs LAMBADA nats/word);
* ``sigma_run ~ LogNormal(*sigma_run)``: run-to-run (seed) offset of ln L;
* ``sigma_obs ~ LogNormal(*sigma_obs)``: checkpoint-level noise of ln L.

A :class:`Prior` is either the weak default (``"flat"``: no borrowing, the numbers
in :mod:`hiscale.priors.defaults`) or a
population prior, the predictive distribution of a *new* family's
parameters learned from many families (:mod:`hiscale.population`) and saved
in ``models/NAME/prior.json``.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from hiscale._paths import bundled
from hiscale._util import json_default
from hiscale.data.curves import Curves, family_groups, name_group
from hiscale.laws import get_law
from hiscale.priors.defaults import CURVE_LAW_PRIORS, DEFAULT_LAW_PRIORS, DEFAULT_PRIORS

__all__ = [
    "DEFAULT_PRIOR",
    "Prior",
    "PriorWarning",
    "flat_prior",
    "list_priors",
    "load_prior",
    "prior_overlap",
    "resolve_prior",
]

#: The shipped population prior used when none is named.
DEFAULT_PRIOR: str = "corpus-v1"


class PriorWarning(UserWarning):
    """The prior in use is not an independent population prior for the family.

    Raised (as a warning) when a Bayesian fit runs with the flat prior because
    no population exists in the family's loss unit, or when the prior was
    learned on the family being fitted (or a sibling in its group).
    """


@dataclass(frozen=True)
class Prior:
    """Prior for one family's parameters.

    Attributes
    ----------
    name : str
        ``"flat"`` or the population prior's name.
    law : str
        Law form the ``z`` vector belongs to.
    names : tuple of str
        Order of ``z``.
    loc : ndarray, shape (K,)
        Prior mean of ``z``.
    cov : ndarray, shape (K, K)
        Prior covariance of ``z`` (diagonal for the flat prior).
    settings : dict
        Noise and scale priors (keys of :data:`DEFAULT_PRIORS`).
    meta : dict
        Provenance (families, data hash, sampler settings, ...).
    """

    name: str
    law: str
    names: tuple[str, ...]
    loc: np.ndarray
    cov: np.ndarray
    settings: dict[str, Any] = field(default_factory=lambda: dict(DEFAULT_PRIORS))
    meta: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self):
        """Check the shapes of ``loc`` and ``cov`` (ValueError if wrong); store them as floats."""
        k = len(self.names)
        loc = np.asarray(self.loc, dtype=float)
        cov = np.asarray(self.cov, dtype=float)
        if loc.shape != (k,) or cov.shape != (k, k):
            raise ValueError(
                f"prior {self.name!r}: expected loc ({k},) and cov ({k}, {k}), "
                f"got {loc.shape} and {cov.shape}"
            )
        object.__setattr__(self, "loc", loc)
        object.__setattr__(self, "cov", cov)

    @property
    def label(self) -> str:
        """What results call this prior: ``meta["label"]`` when set, else ``name``.

        A flat prior used because no population exists says so, e.g.
        ``"flat (no population in unit nats/word)"``.
        """
        return str(self.meta.get("label") or self.name)

    @property
    def tails(self) -> str | None:
        """``"Student-t(NU) tails"`` for a heavy-tailed law prior (``df_law``), else None."""
        df = self.settings.get("df_law")
        return None if df is None else f"Student-t({float(df):g}) tails"

    @property
    def sd(self) -> np.ndarray:
        """Marginal standard deviations of ``z``."""
        return np.sqrt(np.diag(self.cov))

    def with_settings(self, **overrides: Any) -> Prior:
        """Return a copy with some noise/scale settings replaced.

        Parameters
        ----------
        **overrides
            New values for keys of :data:`DEFAULT_PRIORS`.

        Returns
        -------
        Prior
            The copy.

        Raises
        ------
        ValueError
            If a key is not a known setting.
        """
        unknown = set(overrides) - set(DEFAULT_PRIORS)
        if unknown:
            raise ValueError(
                f"unknown prior settings {sorted(unknown)}; known: {list(DEFAULT_PRIORS)}"
            )
        return replace(self, settings={**self.settings, **overrides})

    def for_law(self, law: str) -> Prior:
        """Project/extend this prior onto another law's parameter vector.

        Parameters the prior lacks get the weak default, independent of the
        others; parameters the law does not use are marginalised out (for a
        multivariate normal: drop their rows and columns of ``loc`` and ``cov``).

        Parameters
        ----------
        law : str
            Name of the target law (:func:`hiscale.laws.get_law`).

        Returns
        -------
        Prior
            The prior on the law's ``z`` vector (this prior when it matches already).
        """
        target = get_law(law).params
        if tuple(target) == self.names:
            return self
        k = len(target)
        loc = np.zeros(k)
        cov = np.zeros((k, k))
        idx = {n: i for i, n in enumerate(self.names)}
        for i, ni in enumerate(target):
            if ni in idx:
                loc[i] = self.loc[idx[ni]]
                for j, nj in enumerate(target):
                    if nj in idx:
                        cov[i, j] = self.cov[idx[ni], idx[nj]]
            else:
                m, s = {**DEFAULT_LAW_PRIORS, **CURVE_LAW_PRIORS}[ni]
                loc[i] = m
                cov[i, i] = s**2
        return replace(self, law=get_law(law).name, names=tuple(target), loc=loc, cov=cov)

    def to_dict(self) -> dict[str, Any]:
        """Return a JSON-ready representation (recorded with every result).

        Returns
        -------
        dict
            The fields, with arrays and tuples as lists.
        """
        d = asdict(self)
        d["loc"] = self.loc.tolist()
        d["cov"] = self.cov.tolist()
        d["names"] = list(self.names)
        d["settings"] = {
            k: list(v) if isinstance(v, tuple) else v for k, v in self.settings.items()
        }
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Prior:
        """Build a prior from :meth:`to_dict`'s output (its inverse).

        Parameters
        ----------
        d : dict
            A parsed ``prior.json``; missing settings take their defaults.

        Returns
        -------
        Prior
            The prior.
        """
        settings = {**DEFAULT_PRIORS}
        for k, v in d.get("settings", {}).items():
            settings[k] = tuple(v) if isinstance(v, list) else v
        return cls(
            name=d["name"],
            law=d["law"],
            names=tuple(d["names"]),
            loc=np.asarray(d["loc"], dtype=float),
            cov=np.asarray(d["cov"], dtype=float),
            settings=settings,
            meta=d.get("meta", {}),
        )

    def save(self, directory: str | Path) -> Path:
        """Write ``prior.json`` into ``directory`` (created if needed).

        Parameters
        ----------
        directory : str or pathlib.Path
            Output folder.

        Returns
        -------
        pathlib.Path
            The file written.
        """
        out = Path(directory)
        out.mkdir(parents=True, exist_ok=True)
        path = out / "prior.json"
        path.write_text(json.dumps(self.to_dict(), indent=2, default=json_default) + "\n")
        return path


def flat_prior(law: str = "chinchilla", **settings: Any) -> Prior:
    """Build the weak default prior: no borrowing across families.

    Parameters
    ----------
    law : str, default "chinchilla"
        Law form.
    **settings
        Noise/scale settings to override (:meth:`Prior.with_settings`).

    Returns
    -------
    Prior
        Independent normals from :data:`DEFAULT_LAW_PRIORS` (and
        :data:`CURVE_LAW_PRIORS` for the curve laws), named ``"flat"``.
    """
    names = get_law(law).params
    weak = {**DEFAULT_LAW_PRIORS, **CURVE_LAW_PRIORS}
    loc = np.array([weak[n][0] for n in names])
    sd = np.array([weak[n][1] for n in names])
    prior = Prior(name="flat", law=get_law(law).name, names=names, loc=loc, cov=np.diag(sd**2))
    return prior.with_settings(**settings) if settings else prior


def _search_dirs() -> list[Path]:
    return bundled("models")


def list_priors() -> list[str]:
    """List the population priors shipped with the package.

    Returns
    -------
    list of str
        Sorted names (folders of ``models/`` holding a ``prior.json``).
    """
    names: set[str] = set()
    for d in _search_dirs():
        if d.is_dir():
            names.update(p.parent.name for p in d.glob("*/prior.json"))
    return sorted(names)


def load_prior(name_or_path: str | Path) -> Prior:
    """Load a population prior by shipped name or by path.

    Parameters
    ----------
    name_or_path : str or pathlib.Path
        A shipped name (``"corpus-v1"``, see :func:`list_priors`), a folder
        holding ``prior.json`` or the ``.json`` file itself.

    Returns
    -------
    Prior
        The prior as saved.

    Raises
    ------
    ValueError
        If no such prior exists (the message lists the shipped ones) or the
        file is not a hiscale prior.
    """
    path = Path(name_or_path)
    candidates = []
    if path.suffix == ".json":
        candidates.append(path)
    candidates.append(path / "prior.json")
    candidates += [d / str(name_or_path) / "prior.json" for d in _search_dirs()]
    for c in candidates:
        if c.is_file():
            try:
                return Prior.from_dict(json.loads(c.read_text()))
            except (json.JSONDecodeError, KeyError, ValueError) as err:
                raise ValueError(f"{str(c)!r} is not a hiscale prior: {err}") from err
    known = ", ".join(list_priors()) or "none"
    raise ValueError(f"unknown prior {str(name_or_path)!r}; shipped priors: {known}, or 'flat'")


def prior_families(prior: Prior) -> set[str]:
    """Return the families a prior was learned on.

    Parameters
    ----------
    prior : Prior
        A prior; its ``meta`` records the families used and the population units.

    Returns
    -------
    set of str
        The families (empty for the flat prior).
    """
    meta = prior.meta
    fams = set(meta.get("families_used", {}))
    for members in meta.get("population_units", {}).values():
        fams.update(members)
    return fams


def prior_groups(prior: Prior) -> set[str]:
    """Return the family groups a prior was learned on.

    Parameters
    ----------
    prior : Prior
        A prior.

    Returns
    -------
    set of str
        The recorded groups, the pooled population units and the name groups
        (:func:`hiscale.data.curves.name_group`) of its families.
    """
    meta = prior.meta
    groups = set(meta.get("groups", {}).values())
    if meta.get("pool_groups", True):
        groups.update(meta.get("population_units", {}))
    groups.update(name_group(f) for f in prior_families(prior))
    return groups


def prior_overlap(prior: Prior, curves: Curves, family: str) -> str | None:
    """Say why ``prior`` is not independent of ``family``, or None when it is.

    It is not when it was learned on the family, on a sibling of its group in
    ``curves`` (:func:`hiscale.data.curves.family_groups`), or on a family of a group
    with the same label: a sibling's answer would leak into the prediction.

    Parameters
    ----------
    prior : Prior
        The prior in use.
    curves : Curves
        The data (for the family groups).
    family : str
        The family being fitted.

    Returns
    -------
    str or None
        A one-line reason, or None when the prior is independent.
    """
    fams = prior_families(prior)
    if not fams:
        return None
    groups = family_groups(curves)
    group = groups.get(family, name_group(family))
    siblings = sorted({family, *(f for f, g in groups.items() if g == group)})
    seen = [f for f in siblings if f in fams]
    if seen:
        return (
            f"prior {prior.label!r} was learned on {', '.join(seen)} (group {group!r} of "
            f"{family!r}): it is not independent of the family being fitted"
        )
    if group in prior_groups(prior):
        return (
            f"prior {prior.label!r} was learned on families of group {group!r}, the group of "
            f"{family!r}: it is not independent of the family being fitted"
        )
    return None


def resolve_prior(prior: str | Path | Prior, *, law: str) -> Prior:
    """Turn a prior argument into the :class:`Prior` for ``law``.

    Parameters
    ----------
    prior : str, pathlib.Path or Prior
        ``"flat"``, a shipped name, a path (:func:`load_prior`) or a prior.
    law : str
        Law form of the fit.

    Returns
    -------
    Prior
        The prior on ``law``'s parameters (:meth:`Prior.for_law`).
    """
    if isinstance(prior, Prior):
        return prior.for_law(law)
    if str(prior) == "flat":
        return flat_prior(law)
    return load_prior(prior).for_law(law)
