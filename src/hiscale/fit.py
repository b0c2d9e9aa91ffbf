"""Fit one family with NUTS and predict new sizes: ``fit(...) -> Fit``.

Data selection before the model (all reported in ``Fit.log``):

1. the optional token cut ``tokens > min_tokens``;
2. *end-of-run rows*: per run, rows with ``tokens >= end_of_run x`` its
   largest token count (LESSONS.md, second probe: the separable law does not
   describe mid-schedule checkpoints; fitting only the end of each run
   removed the misfit that drove the bad mode);
3. at most ``max_rows_per_run`` rows per run, evenly spaced (with tempering
   to ``n_eff_per_run`` effective points per run, more rows add little).

Predictions come in two kinds: the *expected* loss of the law at ``(N, D)``
(parameter uncertainty only) and a *new run* at ``(N, D)``, which adds a fresh
run offset and checkpoint noise (seed-to-seed variation).
"""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import pandas as pd
from scipy import stats

from hiscale import __version__
from hiscale.data import Curves, CurvesError, FilterRecord, load_curves
from hiscale.design import Design, make_design, thin_rows
from hiscale.inference import (
    SamplerSettings,
    diagnose,
    dispersed_inits,
    init_params,
    jittered_inits,
    map_estimate,
    paper_start,
    run_nuts,
)
from hiscale.laws import D0, N0, get_law
from hiscale.model import make_family_model, prior_arrays, run_loglik
from hiscale.priors import Prior, resolve_prior
from hiscale.protocol import end_of_run as end_of_run_filter
from hiscale.protocol import filter_min_tokens

__all__ = ["FIT_FORMAT", "Fit", "FitOptions", "fit", "fit_design", "load_fit"]

FIT_FORMAT = "hiscale-fit-1"

#: sigma_obs prior (LogNormal loc, scale) when every run has a single row.
SINGLE_ROW_SIGMA_OBS: tuple[float, float] = (float(np.log(1e-3)), 0.1)


@dataclass(frozen=True)
class FitOptions:
    """Data selection and likelihood options (recorded with every fit)."""

    min_tokens: float = 0.0
    end_of_run: float = 0.8
    max_rows_per_run: int = 32
    n_eff_per_run: float = 4.0

    def to_dict(self) -> dict[str, Any]:
        """Plain dict for provenance."""
        return dict(self.__dict__)


def select_rows(curves: Curves, options: FitOptions) -> Curves:
    """Apply the fit's row selection (token cut, end-of-run, thinning), logged."""
    c = filter_min_tokens(curves, options.min_tokens) if options.min_tokens > 0 else curves
    c = end_of_run_filter(c, options.end_of_run)
    thinned = thin_rows(c.frame, options.max_rows_per_run)
    return c.with_frame(
        thinned, step="thin", reason=f"more than {options.max_rows_per_run} rows in a run"
    )


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
                lo, hi = np.quantile(arr, [(1 - lv) / 2, (1 + lv) / 2], axis=0)
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
            "prior_json": json.dumps(self.prior.to_dict(), default=_json_default),
            "diagnostics_json": json.dumps(self.diagnostics, default=_json_default),
            "sampler_json": json.dumps(self.sampler, default=_json_default),
            "options_json": json.dumps(self.options, default=_json_default),
            "timings_json": json.dumps(self.timings, default=_json_default),
            "provenance_json": json.dumps(self.provenance, default=_json_default),
            "log_json": json.dumps([r.__dict__ for r in self.log], default=_json_default),
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


def _json_default(obj: Any) -> Any:
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, tuple):
        return list(obj)
    raise TypeError(f"not JSON serialisable: {type(obj).__name__}")


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


def fit_design(
    design: Design,
    prior: Prior,
    *,
    law: str,
    seed: int = 0,
    sampler: SamplerSettings | None = None,
) -> tuple[
    dict[str, np.ndarray], dict[str, Any], dict[str, np.ndarray], dict[str, float], dict[str, Any]
]:
    """MAP then NUTS on a design.

    Returns ``(posterior, diagnostics, sample_stats, timings, inits)``;
    ``inits`` says where each chain started (see
    :func:`hiscale.inference.dispersed_inits`) and the MAP searches behind it.
    """
    sampler = sampler or SamplerSettings()
    law_obj = get_law(law)
    prior = prior.for_law(law_obj.name)
    model = make_family_model(law_obj.name)
    kwargs = {
        **{k: jnp.asarray(v) for k, v in design.model_args().items()},
        "run_mask": jnp.arange(design.n_runs_padded) < design.n_runs,
        "prior": {
            k: jnp.asarray(v)
            for k, v in prior_arrays(prior, log_scale_loc=design.log_scale_loc).items()
        },
        "log_loss": jnp.asarray(design.log_loss),
    }
    t0 = time.perf_counter()
    start = init_params(len(law_obj.params), design.log_scale_loc)
    map_params, map_u, _ = map_estimate(model, kwargs, start)
    optima = [(map_params, map_u, "MAP from the prior centre")]
    info: dict[str, Any] = {"method": sampler.init}
    key_init, key_run = jax.random.split(jax.random.PRNGKey(seed))
    if sampler.init == "dispersed" and sampler.num_chains > 1:
        m = design.mask
        ls_start, status = paper_start(
            N0 * np.exp(design.x[m]),
            D0 * np.exp(design.y[m]),
            np.exp(design.log_loss[m]),
            names=law_obj.params,
            prior=kwargs["prior"],
            centre=start,
        )
        info["paper_least_squares"] = status
        if ls_start is not None:
            ls_params, ls_u, _ = map_estimate(model, kwargs, ls_start, centre=start)
            optima.append((ls_params, ls_u, "MAP from the paper's least-squares fit"))
        info["map_potentials"] = [float(u) for _, u, _ in optima]
        inits, labels = dispersed_inits(
            model, kwargs, optima=optima, centre=start, rng_key=key_init, settings=sampler
        )
    else:
        inits = jittered_inits(map_params, rng_key=key_init, settings=sampler)
        labels = [f"MAP + {sampler.init_jitter:g} x N(0, 1) jitter"] * sampler.num_chains
    info["chains"] = labels
    t1 = time.perf_counter()
    samples, extra = run_nuts(model, kwargs, rng_key=key_run, settings=sampler, init=inits)
    t2 = time.perf_counter()
    diag = diagnose(
        samples,
        diverging=extra["diverging"],
        num_steps=extra["num_steps"],
        max_tree_depth=sampler.max_tree_depth,
        energy=extra["energy"],
    )
    n_steps = extra["num_steps"].astype(np.int64)
    tree_depth = np.floor(np.log2(np.maximum(n_steps, 1))).astype(np.int64) + 1
    stats_ = {
        "diverging": extra["diverging"].astype(bool),
        "energy": extra["energy"].astype(float),
        "lp": -extra["potential_energy"].astype(float),
        "n_steps": n_steps,
        "tree_depth": tree_depth,
        "reached_max_tree_depth": n_steps >= 2**sampler.max_tree_depth - 1,
        "step_size": extra["step_size"].astype(float),
        "acceptance_rate": extra["accept_prob"].astype(float),
    }
    timings = {"map_seconds": t1 - t0, "nuts_seconds": t2 - t1}
    return samples, diag, stats_, timings, info


def fit(
    curves: Curves | pd.DataFrame | str | Path,
    *,
    family: str | None = None,
    prior: str | Path | Prior = "corpus-v1",
    law: str = "chinchilla",
    seed: int = 0,
    options: FitOptions | None = None,
    sampler: SamplerSettings | None = None,
    metric: str = "primary",
) -> Fit:
    """Fit one family's runs with NUTS under a (population) prior.

    Parameters
    ----------
    curves : Curves, DataFrame or path
        Curves table (validated if not already a :class:`Curves`).
    family : str, optional
        Family to fit; required when the table holds several.
    prior : "corpus-v1", "flat", path or Prior
        Population prior to borrow from (``"flat"`` = weak defaults only).
    law : str
        Law form (see :data:`hiscale.laws.LAWS`).
    seed : int
        Seed of the sampler (same seed -> identical draws).
    options : FitOptions, optional
        Row selection and tempering.
    sampler : SamplerSettings, optional
        NUTS settings.
    metric : str
        Metric selection when ``curves`` is not yet a Curves.

    Returns
    -------
    Fit
    """
    options = options or FitOptions()
    sampler = sampler or SamplerSettings()
    c = curves if isinstance(curves, Curves) else load_curves(curves, metric=metric)
    fams = c.families
    if family is None:
        if len(fams) != 1:
            raise CurvesError(
                f"column 'family': the data hold {len(fams)} families; pick one with family= "
                f"({', '.join(fams)})"
            )
        family = fams[0]
    c = c.family(family)
    selected = select_rows(c, options)
    if len(selected) == 0:
        raise CurvesError(f"column 'tokens': no rows of family {family!r} left after filters")
    pr = resolve_prior(prior, law=law)
    notes = []
    prior_unit = pr.meta.get("loss_unit")
    if prior_unit and "loss_unit" in c.frame.columns:
        units = set(c.frame["loss_unit"].dropna().astype(str))
        if units and prior_unit not in units:
            notes.append(
                f"prior {pr.name!r} was learned from families in {prior_unit!r}, this family "
                f"is in {sorted(units)}: borrowing across loss units is not calibrated"
            )
    design = make_design(selected, n_eff_per_run=options.n_eff_per_run)
    if design.n_rows == design.n_runs:
        # one row per run (final-only families): run offsets and checkpoint noise
        # are not separately identified; the run offset carries all the noise.
        pr = pr.with_settings(sigma_obs=SINGLE_ROW_SIGMA_OBS)
    t0 = time.perf_counter()
    samples, diag, stats_, timings, inits = fit_design(
        design, pr, law=law, seed=seed, sampler=sampler
    )
    timings["total_seconds"] = time.perf_counter() - t0
    data = selected.frame.sort_values(["params", "run", "tokens"]).reset_index(drop=True)
    return Fit(
        family=family,
        law=get_law(law).name,
        prior=pr,
        posterior=samples,
        diagnostics=diag,
        sampler=sampler.to_dict(),
        options=options.to_dict(),
        seed=seed,
        data=data,
        log=selected.log,
        timings=timings,
        provenance={
            "data_hash": c.data_hash(),
            "hiscale_version": __version__,
            "notes": notes,
            "inits": inits,
        },
        sample_stats=stats_,
    )
