"""The result of a fit, :class:`Fit`: draws, diagnostics, provenance and predictions.

Predictions come in two kinds: the *expected* loss of the law at ``(N, D)``
(parameter uncertainty only) and a *new run* at ``(N, D)``, which adds a fresh
run offset and checkpoint noise (seed-to-seed variation).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import pandas as pd
from scipy import stats

from hiscale._config import require_x64
from hiscale._util import central_interval, json_default
from hiscale._version import __version__
from hiscale.data.curves import FilterRecord
from hiscale.laws import D0, N0, get_law
from hiscale.modeling.design import make_design
from hiscale.modeling.family import run_loglik
from hiscale.priors.prior import Prior

__all__ = ["FIT_FORMAT", "Fit", "load_fit"]

FIT_FORMAT = "hiscale-fit-1"


@dataclass
class Fit:
    """A fitted family: posterior draws, diagnostics and provenance.

    Use :meth:`predict` for intervals, :meth:`to_datatree` for ArviZ, and
    :meth:`save` / :func:`load_fit` to round-trip through netCDF.
    """

    family: str
    law: str
    prior: Prior
    posterior: dict[str, np.ndarray]  # site -> (chain, draw, ...)
    diagnostics: dict[str, Any]
    sampler: dict[str, Any]
    options: dict[str, Any]
    seed: int
    data: pd.DataFrame  # the rows the model saw
    log: tuple[FilterRecord, ...] = ()
    timings: dict[str, float] = field(default_factory=dict)
    provenance: dict[str, Any] = field(default_factory=dict)
    sample_stats: dict[str, np.ndarray] = field(default_factory=dict)

    @property
    def flagged(self) -> bool:
        """True when the sampler failed a convergence threshold."""
        return bool(self.diagnostics.get("flagged", False))

    def theta(self) -> dict[str, np.ndarray]:
        """Law parameters, flattened over chains: name -> (S,)."""
        names = (*get_law(self.law).params, "log_scale", "sigma_run", "sigma_obs")
        return {n: np.asarray(self.posterior[n]).reshape(-1) for n in names}

    def draws(self, params, tokens, *, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
        """Posterior-predictive draws ``(expected, new_run)``, each ``(S, M)``.

        ``expected = L̂(N, D)``; ``new_run = L̂ exp(sigma_run t_run + sigma_obs
        t_obs)`` with ``t`` Student-t draws of the model's degrees of freedom,
        one fresh run offset per draw and target point.
        """
        require_x64("Fit.draws")
        n = np.atleast_1d(np.asarray(params, dtype=float))
        d = np.atleast_1d(np.asarray(tokens, dtype=float))
        n, d = np.broadcast_arrays(n, d)
        th = self.theta()
        law = get_law(self.law)
        x = jnp.log(n / N0)[None, :]
        y = jnp.log(d / D0)[None, :]
        theta = {k: jnp.asarray(v)[:, None] for k, v in th.items()}
        mu = np.asarray(law.log_loss(x, y, theta))
        s = self.prior.settings
        rng = np.random.default_rng(seed)
        t_run = stats.t.rvs(s["df_run"], size=mu.shape, random_state=rng)
        t_obs = stats.t.rvs(s["df_obs"], size=mu.shape, random_state=rng)
        new = mu + th["sigma_run"][:, None] * t_run + th["sigma_obs"][:, None] * t_obs
        return np.exp(mu), np.exp(new)

    def predict(
        self,
        params,
        tokens,
        *,
        ci_prob: float | Sequence[float] = (0.5, 0.8, 0.95),
        seed: int = 0,
    ) -> pd.DataFrame:
        """Median, mean and central intervals of the expected loss and a new run.

        Parameters
        ----------
        params, tokens : float or array_like
            Target model size(s) N and token count(s) D (broadcast).
        ci_prob : float or sequence of float
            Central interval probabilities.
        seed : int
            Seed of the new-run noise draws (same seed -> identical numbers).

        Returns
        -------
        pandas.DataFrame
            One row per target point: ``params, tokens``, then for ``kind`` in
            (``expected``, ``new_run``) the columns ``{kind}_median``,
            ``{kind}_mean``, ``{kind}_lower{P}``, ``{kind}_upper{P}`` (P in
            percent), plus ``flagged``.
        """
        levels = [ci_prob] if np.isscalar(ci_prob) else list(ci_prob)
        for lv in levels:
            if not 0 < float(lv) < 1:
                raise ValueError(f"ci_prob must be in (0, 1), got {lv}")
        n = np.atleast_1d(np.asarray(params, dtype=float))
        d = np.atleast_1d(np.asarray(tokens, dtype=float))
        for name, v in (("params", n), ("tokens", d)):
            if not np.all(np.isfinite(v)) or np.any(v <= 0):
                raise ValueError(f"{name} must be finite and > 0, got {v.tolist()}")
        n, d = np.broadcast_arrays(n, d)
        expected, new = self.draws(n, d, seed=seed)
        out = {"params": n, "tokens": d}
        for kind, arr in (("expected", expected), ("new_run", new)):
            out[f"{kind}_median"] = np.median(arr, axis=0)
            out[f"{kind}_mean"] = arr.mean(axis=0)
            for lv in levels:
                tag = f"{round(100 * float(lv)):d}"
                lo, hi = central_interval(arr, lv, axis=0)
                out[f"{kind}_lower{tag}"] = lo
                out[f"{kind}_upper{tag}"] = hi
        frame = pd.DataFrame(out)
        frame["flagged"] = self.flagged
        return frame

    # ---------------------------------------------------------------- ArviZ
    def to_datatree(self):
        """ArviZ 1.x DataTree: posterior, sample_stats, log_likelihood,
        posterior_predictive, observed_data, constant_data; provenance in attrs.
        """
        import arviz as az

        require_x64("Fit.to_datatree")
        law = get_law(self.law)
        names = (*law.params, "log_scale", "sigma_run", "sigma_obs")
        post = {n: np.asarray(self.posterior[n]) for n in names}
        post["alpha"] = np.exp(post["log_alpha"])
        post["beta"] = np.exp(post["log_beta"])
        runs = list(dict.fromkeys(self.data["run"].tolist()))
        run_idx = self._run_index()
        n_rows, n_runs = len(self.data), len(runs)
        obs = np.log(self.data["loss"].to_numpy(float))
        mu = np.asarray(self.posterior["mu"])[..., :n_rows]
        s = self.prior.settings
        weight = np.asarray(
            make_design(self.data, n_eff_per_run=self.options["n_eff_per_run"]).weight[:n_rows]
        )
        # pointwise log-likelihood per run (leave-one-run-out PSIS-LOO)
        c, d = mu.shape[:2]
        loglik = np.asarray(
            jax.vmap(
                lambda r, sr, so: run_loglik(
                    r,
                    jnp.asarray(run_idx),
                    jnp.asarray(weight),
                    jnp.ones(n_rows, bool),
                    n_runs,
                    sr,
                    so,
                    s["df_run"],
                    s["df_obs"],
                )
            )(
                jnp.asarray((obs - mu).reshape(c * d, n_rows)),
                jnp.asarray(post["sigma_run"].reshape(-1)),
                jnp.asarray(post["sigma_obs"].reshape(-1)),
            )
        ).reshape(c, d, n_runs)
        # replicated rows: run offset from its conditional (Gaussian approx.) + noise
        rng = np.random.default_rng(self.seed)
        resid = obs - mu
        n_r = np.bincount(run_idx, minlength=n_runs).astype(float)
        rbar = (
            np.stack(
                [
                    np.bincount(run_idx, weights=row, minlength=n_runs)
                    for row in resid.reshape(c * d, -1)
                ]
            ).reshape(c, d, n_runs)
            / n_r
        )
        vr = post["sigma_run"][..., None] ** 2
        vo = post["sigma_obs"][..., None] ** 2 / n_r
        shrink = vr / (vr + vo)
        delta = shrink * rbar + np.sqrt(shrink * vo) * rng.standard_normal(rbar.shape)
        rep = (
            mu
            + delta[..., run_idx]
            + post["sigma_obs"][..., None]
            * stats.t.rvs(s["df_obs"], size=mu.shape, random_state=rng)
        )
        dt = az.from_dict(
            {
                "posterior": post,
                "sample_stats": {k: np.asarray(v) for k, v in self.sample_stats.items()},
                "log_likelihood": {"run_loglik": loglik},
                "posterior_predictive": {"log_loss": rep},
                "observed_data": {"log_loss": obs},
                "constant_data": {
                    "params": self.data["params"].to_numpy(float),
                    "tokens": self.data["tokens"].to_numpy(float),
                    "run_index": run_idx,
                },
            },
            dims={
                "run_loglik": ["run"],
                "log_loss": ["row"],
                "params": ["row"],
                "tokens": ["row"],
                "run_index": ["row"],
            },
            coords={"run": runs, "row": np.arange(n_rows)},
        )
        dt.attrs.update(self._attrs())
        return dt

    def _run_index(self) -> np.ndarray:
        runs = list(dict.fromkeys(self.data["run"].tolist()))
        idx = {r: i for i, r in enumerate(runs)}
        return self.data["run"].map(idx).to_numpy(int)

    def _attrs(self) -> dict[str, Any]:
        return {
            "hiscale_format": FIT_FORMAT,
            "hiscale_version": __version__,
            "family": self.family,
            "law": self.law,
            "seed": int(self.seed),
            "prior_json": json.dumps(self.prior.to_dict(), default=json_default),
            "diagnostics_json": json.dumps(self.diagnostics, default=json_default),
            "sampler_json": json.dumps(self.sampler, default=json_default),
            "options_json": json.dumps(self.options, default=json_default),
            "timings_json": json.dumps(self.timings, default=json_default),
            "provenance_json": json.dumps(self.provenance, default=json_default),
            "log_json": json.dumps([r.__dict__ for r in self.log], default=json_default),
            "runs_json": json.dumps(self.data["run"].tolist()),
        }

    def save(self, path: str | Path) -> Path:
        """Write the fit as netCDF (h5netcdf engine); :func:`load_fit` reads it back."""
        path = Path(path)
        dt = self.to_datatree()
        # the full-precision draws needed by predict() go in a group of their own
        import xarray as xr

        law = get_law(self.law)
        names = (*law.params, "log_scale", "sigma_run", "sigma_obs", "mu")
        ds = xr.Dataset(
            {
                n: (
                    ("chain", "draw", *(("row_padded",) if n == "mu" else ())),
                    np.asarray(self.posterior[n]),
                )
                for n in names
            }
        )
        dt["hiscale_draws"] = xr.DataTree(ds)
        dt.to_netcdf(path, engine="h5netcdf")
        return path

    def summary(self) -> str:
        """One-paragraph sampler verdict."""
        d = self.diagnostics
        verdict = "NOT CONVERGED: " + d.get("reasons", "") if self.flagged else "converged"
        return (
            f"sampler: r_hat max {d['rhat_max']:.3f}, ESS min {d['ess_min']:.0f} "
            f"(tail {d['ess_tail_min']:.0f}), divergences {d['divergences']}, "
            f"max-depth hits {d['tree_depth_hits']}, "
            f"E-BFMI min {d.get('bfmi_min', float('nan')):.2f}, "
            f"chain disagreement {d['chain_disagreement']:.2f} sd -> {verdict}"
        )


def load_fit(path: str | Path) -> Fit:
    """Read a fit written by :meth:`Fit.save` (one-line error otherwise)."""
    import xarray as xr

    path = Path(path)
    if not path.is_file():
        raise ValueError(f"fit file not found: {str(path)!r}")
    try:
        dt = xr.open_datatree(path, engine="h5netcdf")
    except Exception as err:
        raise ValueError(
            f"{str(path)!r} is not a hiscale fit (cannot read netCDF: {type(err).__name__})"
        ) from None
    attrs = dict(dt.attrs)
    fmt = attrs.get("hiscale_format")
    if fmt is None or "hiscale_draws" not in dt.children:
        raise ValueError(f"{str(path)!r} is not a hiscale fit (no hiscale_format attribute)")
    if fmt != FIT_FORMAT:
        raise ValueError(
            f"{str(path)!r} was written in format {fmt!r} "
            f"(hiscale {attrs.get('hiscale_version')}); "
            f"this hiscale ({__version__}) reads {FIT_FORMAT!r}"
        )
    draws = dt["hiscale_draws"].to_dataset()
    posterior = {n: np.asarray(draws[n].values) for n in draws.data_vars}
    cd = dt["constant_data"].to_dataset()
    runs = json.loads(attrs["runs_json"])
    data = pd.DataFrame(
        {
            "family": attrs["family"],
            "run": runs,
            "params": cd["params"].values,
            "tokens": cd["tokens"].values,
            "loss": np.exp(dt["observed_data"].to_dataset()["log_loss"].values),
        }
    )
    log = tuple(FilterRecord(**r) for r in json.loads(attrs["log_json"]))
    fit_obj = Fit(
        family=attrs["family"],
        law=attrs["law"],
        prior=Prior.from_dict(json.loads(attrs["prior_json"])),
        posterior=posterior,
        diagnostics=json.loads(attrs["diagnostics_json"]),
        sampler=json.loads(attrs["sampler_json"]),
        options=json.loads(attrs["options_json"]),
        seed=int(attrs["seed"]),
        data=data,
        log=log,
        timings=json.loads(attrs["timings_json"]),
        provenance=json.loads(attrs["provenance_json"]),
    )
    dt.close()
    return fit_obj
