"""The result of a fit, :class:`Fit`: one ArviZ DataTree holding everything.

A :class:`Fit` wraps one :class:`xarray.DataTree`, built once right after
sampling (:meth:`Fit.from_samples`) and never recomputed; every property reads
from it, :meth:`Fit.save` writes it and :func:`load_fit` reads it back. Its
groups follow ArviZ's conventions:

``posterior``
    The law parameters, ``log_scale``, ``sigma_run``, ``sigma_obs`` (float64),
    the derived exponents ``alpha``/``beta`` and the fitted log loss ``mu``
    of every row the model saw (dim ``row``).
``sample_stats``
    ``diverging``, ``energy``, ``lp``, ``n_steps``, ``tree_depth``,
    ``reached_max_tree_depth``, ``step_size``, ``acceptance_rate``.
``log_likelihood``
    ``run_log_loss`` (dim ``run``): each run's log-likelihood with its run
    offset integrated out (:func:`hiscale.modeling.family.run_loglik`), so
    ``az.loo(dt, var_name="run_log_loss")`` is leave-one-*run*-out PSIS-LOO.
``observed_data``
    ``log_loss`` (dim ``row``) and its per-run twin ``run_log_loss`` (dim
    ``run``), the mean of a run's log losses.
``posterior_predictive``
    Replicates of both, drawn once at fit time (see :meth:`Fit.from_samples`
    for the seed stream): ``log_loss`` at the fitted runs, ``run_log_loss``
    for a *new* run at each run's rows, so ``az.loo_pit(dt,
    var_names="run_log_loss")`` is a leave-one-run-out calibration check.
``constant_data``
    ``params``, ``tokens``, ``loss`` and ``run_index`` of every row.

The attributes hold every setting (family, law, seed, prior, sampler, fit
options, diagnostics, timings, provenance, filter log, format version); the
structured ones as JSON strings (netCDF attributes are flat).

Predictions come in two kinds: the *expected* loss of the law at ``(N, D)``
(parameter uncertainty only) and a *new run* at ``(N, D)``, which adds a fresh
run offset and checkpoint noise (seed-to-seed variation).

Whole-curve fits (``FitOptions(residual="ar1")``, :attr:`Fit.is_curve`)
differ in: ``posterior`` adds ``rho``; ``log_likelihood.run_log_loss`` is
each run's exact offset + AR(1) Gaussian density
(:func:`hiscale.modeling.curve.run_loglik_ar1`); the replicates draw the run
offsets from their Gaussian conditional and fresh AR(1) paths; a new run
gets a Gaussian offset and an AR(1) path; ``constant_data`` adds the
schedule covariates (``lr_mult, s1, s2, anneal, memory_tokens``) and the
attribute ``curve_json`` holds every run's schedule. They add
:meth:`Fit.predict_curve` (a whole curve under a schedule) and
:meth:`Fit.predict_run` (continue a fitted run from its own offset and AR
state).
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from functools import partial
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import pandas as pd
import xarray as xr
from scipy import stats

from hiscale._config import require_x64
from hiscale._util import central_interval, json_default
from hiscale._version import __version__
from hiscale.data.curves import FilterRecord
from hiscale.infer.settings import FitOptions, SamplerSettings
from hiscale.laws import D0, N0, get_law
from hiscale.modeling.curve import (
    ar1_paths,
    make_curve_design,
    offset_posterior,
    replicate_runs,
)
from hiscale.modeling.design import make_design
from hiscale.modeling.family import run_loglik
from hiscale.priors.prior import Prior

__all__ = ["FIT_FORMAT", "Fit", "load_fit"]

#: Format tag written to (and required from) a saved fit's attributes.
FIT_FORMAT = "hiscale-fit-2"

#: Interval probabilities of :meth:`Fit.predict` when none are given.
DEFAULT_CI_PROB: tuple[float, ...] = (0.5, 0.8, 0.95)

#: Attributes stored as JSON strings, by property name.
_JSON_ATTRS = (
    "prior",
    "diagnostics",
    "sampler",
    "options",
    "timings",
    "provenance",
    "log",
)


class Fit:
    """A fitted family: one ArviZ DataTree with draws, diagnostics and provenance.

    Built by :func:`hiscale.fit` (or :meth:`from_samples`); use
    :meth:`predict` for intervals, :meth:`predictions` for the predictive
    draws as a DataTree, :meth:`to_datatree` for ArviZ, and :meth:`save` /
    :func:`load_fit` to round-trip through netCDF.

    Parameters
    ----------
    datatree : xarray.DataTree
        A tree written by :meth:`from_samples` (format :data:`FIT_FORMAT`).

    Raises
    ------
    ValueError
        If ``datatree`` is not in format :data:`FIT_FORMAT`.
    """

    def __init__(self, datatree: xr.DataTree):
        fmt = datatree.attrs.get("hiscale_format")
        if fmt != FIT_FORMAT:
            raise ValueError(f"not a hiscale fit tree: format {fmt!r}, need {FIT_FORMAT!r}")
        self._dt = datatree

    def __repr__(self) -> str:
        """Family, law, prior, seed and verdict in one line."""
        return (
            f"Fit(family={self.family!r}, law={self.law!r}, prior={self.prior.label!r}, "
            f"seed={self.seed}, flagged={self.flagged})"
        )

    # ------------------------------------------------------------- the state
    @property
    def datatree(self) -> xr.DataTree:
        """The fit's one state: the ArviZ DataTree (also :attr:`dt`)."""
        return self._dt

    @property
    def dt(self) -> xr.DataTree:
        """Short name of :attr:`datatree`."""
        return self._dt

    def to_datatree(self) -> xr.DataTree:
        """Return the fit's DataTree itself (not a copy, nothing recomputed or redrawn).

        Returns
        -------
        xarray.DataTree
            Groups ``posterior``, ``sample_stats``, ``log_likelihood``,
            ``posterior_predictive``, ``observed_data``, ``constant_data``;
            settings and provenance in its attributes.
        """
        return self._dt

    def _json(self, name: str) -> Any:
        return json.loads(self._dt.attrs[f"{name}_json"])

    @property
    def family(self) -> str:
        """Name of the fitted family."""
        return str(self._dt.attrs["family"])

    @property
    def law(self) -> str:
        """Name of the law form (:data:`hiscale.laws.LAWS`)."""
        return str(self._dt.attrs["law"])

    @property
    def seed(self) -> int:
        """Seed of the sampler and of the posterior-predictive draws."""
        return int(self._dt.attrs["seed"])

    @property
    def prior(self) -> Prior:
        """The prior the fit used (with any settings the fit changed)."""
        return Prior.from_dict(self._json("prior"))

    @property
    def diagnostics(self) -> dict[str, Any]:
        """The sampler's verdict (:func:`hiscale.infer.diagnostics.diagnose`), a fresh dict."""
        return self._json("diagnostics")

    @property
    def sampler(self) -> SamplerSettings:
        """NUTS settings of the fit."""
        return SamplerSettings(**self._json("sampler"))

    @property
    def options(self) -> FitOptions:
        """Row selection and tempering options of the fit."""
        return FitOptions(**self._json("options"))

    @property
    def timings(self) -> dict[str, float]:
        """Seconds spent in the MAP search, NUTS and in total."""
        return self._json("timings")

    @property
    def provenance(self) -> dict[str, Any]:
        """Data hash, hiscale version, notes (prior warnings) and chain starts."""
        return self._json("provenance")

    def _record(self, key: str, value: Any, note: str | None = None) -> None:
        """Add ``provenance[key] = value`` (and a line to its notes) to this fit, in place."""
        prov = self.provenance
        prov[key] = value
        if note is not None:
            prov.setdefault("notes", []).append(note)
        self._dt.attrs["provenance_json"] = json.dumps(prov, default=json_default)

    @property
    def log(self) -> tuple[FilterRecord, ...]:
        """What each selection step removed before the model saw the rows."""
        return tuple(FilterRecord(**r) for r in self._json("log"))

    @property
    def retried(self) -> str:
        """Why the first NUTS run was flagged and re-run; "" when it was not.

        :func:`hiscale.fit` re-runs a flagged fit once with more careful
        settings (``provenance["retry"]``); this fit is the second run.
        """
        r = self.provenance.get("retry")
        return "" if r is None else str(r["first_diagnostics"].get("reasons", "")) or "flagged"

    @property
    def flagged(self) -> bool:
        """True when the sampler failed a convergence threshold."""
        return bool(self.diagnostics.get("flagged", False))

    @property
    def data(self) -> pd.DataFrame:
        """The rows the model saw: ``family, run, params, tokens, loss`` (a new frame)."""
        cd = self._dt["constant_data"]
        runs = np.asarray(self._dt["observed_data"]["run"].values).astype(str)
        return pd.DataFrame(
            {
                "family": self.family,
                "run": runs[np.asarray(cd["run_index"].values)],
                "params": np.asarray(cd["params"].values),
                "tokens": np.asarray(cd["tokens"].values),
                "loss": np.asarray(cd["loss"].values),
            }
        )

    @property
    def posterior(self) -> dict[str, np.ndarray]:
        """The posterior group as arrays: name -> ``(chain, draw, ...)``."""
        post = self._dt["posterior"]
        return {str(n): np.asarray(post[n].values) for n in post.data_vars}

    def theta(self) -> dict[str, np.ndarray]:
        """Law parameters and noise scales, flattened over chains.

        Returns
        -------
        dict of str to numpy.ndarray
            The law's parameters, ``log_scale``, ``sigma_run`` and
            ``sigma_obs``, each of shape ``(S,)`` with ``S = chains x draws``
            (chain-major).
        """
        post = self._dt["posterior"]
        names = (*get_law(self.law).params, "log_scale", "sigma_run", "sigma_obs")
        if self.is_curve:
            names = (*names, "rho")
        return {n: np.asarray(post[n].values).reshape(-1) for n in names}

    # ------------------------------------------------------------ whole curves
    @property
    def is_curve(self) -> bool:
        """True for a whole-curve fit (offset + AR(1) likelihood, ``residual="ar1"``)."""
        return "curve_json" in self._dt.attrs

    @property
    def curve(self) -> dict[str, Any]:
        """Schedules and AR settings of a whole-curve fit (empty dict otherwise).

        Keys ``ell`` (length scale of ``rho`` in ``ln D``), ``decay``
        (momentum decay per step), ``schedules`` (run -> fields of
        :class:`~hiscale.data.schedule.Schedule`) and ``schedule_notes``.
        """
        return self._json("curve") if self.is_curve else {}

    def _schedule_of(self, run: str):
        """Return the :class:`~hiscale.data.schedule.Schedule` of a fitted run (or None)."""
        from hiscale.data.schedule import Schedule

        fields = self.curve.get("schedules", {}).get(str(run))
        return None if fields is None else Schedule(**fields)

    def family_schedule(self):
        """Return the family's usual schedule: that of its largest model's longest run.

        Returns
        -------
        schedule : Schedule or None
            ``None`` when no run's schedule is known (or not a curve fit).
        run : str or None
            The run it was taken from.
        """
        data = self.data
        best = None
        for run in dict.fromkeys(data["run"]):
            sched = self._schedule_of(run)
            if sched is None:
                continue
            key = (float(data.loc[data["run"] == run, "params"].iloc[0]), sched.horizon)
            if best is None or key >= best[0]:
                best = (key, sched, str(run))
        return (None, None) if best is None else (best[1], best[2])

    def target_schedule(self, schedule=None, run_tokens: float | None = None):
        """Resolve the schedule of a target run over ``run_tokens`` tokens.

        Parameters
        ----------
        schedule : None, str or Schedule
            ``None``: the family's usual schedule (:meth:`family_schedule`)
            stretched to ``run_tokens`` (:func:`~hiscale.data.schedule.scale_schedule`);
            a name of :data:`~hiscale.data.schedule.NAMED_SCHEDULES` over
            ``run_tokens``; or a :class:`~hiscale.data.schedule.Schedule`.
        run_tokens : float, optional
            The run's planned length (required unless ``schedule`` is a
            Schedule).

        Returns
        -------
        schedule : Schedule or None
            ``None`` for a law without a schedule term.
        description : str
            What was used, in words (the prediction reports it).

        Raises
        ------
        ValueError
            If the family's usual schedule is asked but no run's schedule is
            known, or the name is unknown.
        """
        from hiscale.data.schedule import (
            NAMED_SCHEDULES,
            Schedule,
            named_schedule,
            scale_schedule,
        )

        if not get_law(self.law).covariates:
            return None, f"law {self.law!r} has no schedule term"
        if isinstance(schedule, Schedule):
            shape, horizon = schedule.decay_shape, schedule.horizon
            return schedule, f"given schedule ({shape} decay, horizon {horizon:.4g} tokens)"
        fam, run = self.family_schedule()
        if schedule is None:
            if fam is None:
                raise ValueError(f"no schedule of family {self.family!r} is known: give schedule=")
            return scale_schedule(fam, run_tokens), (
                f"the family's usual schedule (run {run!r}: {fam.decay_shape} decay), "
                f"stretched to {run_tokens:.4g} tokens"
            )
        tps = fam.tokens_per_step if fam is not None else None
        sched = named_schedule(str(schedule), run_tokens, tokens_per_step=tps)
        return sched, f"{schedule}: {NAMED_SCHEDULES[str(schedule)]}, {run_tokens:.4g} tokens"

    def _log_mu(self, params, tokens, sched, theta=None, decay=None) -> np.ndarray:
        """``ln L̂`` per draw at ``(params, tokens)`` under ``sched``: ``(S, M)``.

        ``theta`` (:meth:`theta`) and ``decay`` (``curve["decay"]``), passed by
        callers that evaluate many runs, save reading the fit again.
        """
        from hiscale.data.schedule import schedule_covariates

        law = get_law(self.law)
        n = np.broadcast_to(np.asarray(params, float), np.shape(tokens))
        d = np.asarray(tokens, float)
        cov = None
        if law.covariates:
            if decay is None:
                decay = self.curve.get("decay", 0.999)
            cov_np, _ = schedule_covariates(sched, d, decay=decay)
            cov = {k: jnp.asarray(cov_np[k])[None, :] for k in law.covariates}
        theta = self.theta() if theta is None else theta
        theta = {k: jnp.asarray(v)[:, None] for k, v in theta.items()}
        x = jnp.log(n / N0)[None, :]
        y = jnp.log(d / D0)[None, :]
        return np.asarray(law.log_loss(x, y, theta, cov))

    def run_lines(self, grids: Mapping[str, Any]) -> dict[str, np.ndarray]:
        """Per fitted run, the law along its own schedule times the run's offset: posterior medians.

        What the curves figure draws for a whole-curve fit, for many runs at
        once: ``median over draws of exp(ln L̂(N_run, D) + δ_run)``, with
        :meth:`expected_along_run` and the conditional mean ``δ_run`` of
        :meth:`run_offset` (tested equal to them run by run); the posterior is
        read once, not once per run.

        Parameters
        ----------
        grids : mapping of str to array_like
            Run -> tokens at which to draw its line.

        Returns
        -------
        dict of str to numpy.ndarray
            Run -> median loss at its tokens.

        Raises
        ------
        ValueError
            If a run is not in the fit, this is not a whole-curve fit, or a
            run's schedule is unknown.
        """
        if not self.is_curve:
            raise ValueError("run_lines: a whole-curve fit is needed (rows='all', residual='ar1')")
        from hiscale.data.schedule import Schedule

        data = self.data
        curve = self.curve
        theta = self.theta()
        tokens = data["tokens"].to_numpy(float)
        mu = np.asarray(self._dt["posterior"]["mu"].values)
        out = {}
        for run, grid in grids.items():
            rows, resid = _run_residuals(data, mu, run, self.family)
            fields = curve.get("schedules", {}).get(str(run))
            if fields is None:
                raise ValueError(f"run {run!r}: schedule unknown")
            offset, _ = offset_posterior(
                resid,
                np.log(tokens[rows] / D0),
                theta["sigma_run"],
                theta["sigma_obs"],
                theta["rho"],
                curve["ell"],
            )
            grid = np.atleast_1d(np.asarray(grid, float))
            n = float(data["params"].to_numpy()[rows[0]])
            log_mu = self._log_mu(n, grid, Schedule(**fields), theta, curve.get("decay", 0.999))
            out[str(run)] = np.median(np.exp(log_mu) * np.exp(offset)[:, None], axis=0)
        return out

    def expected_along_run(self, run: str, tokens) -> np.ndarray:
        """Draws of the law along a fitted run, under that run's own schedule.

        Parameters
        ----------
        run : str
            A run of the fit's data.
        tokens : array_like
            Checkpoints (any; the schedule is the run's).

        Returns
        -------
        numpy.ndarray
            Expected losses ``(S, M)`` (parameter uncertainty only).

        Raises
        ------
        ValueError
            If the run is not in the fit, or the law needs a schedule the fit
            does not know for it.
        """
        data = self.data
        sel = data["run"].to_numpy() == str(run)
        if not sel.any():
            raise ValueError(f"run {run!r} is not in the fit of {self.family!r}")
        sched = self._schedule_of(run)
        if sched is None and get_law(self.law).covariates:
            raise ValueError(f"run {run!r}: schedule unknown")
        n = float(data["params"].to_numpy()[sel][0])
        return np.exp(self._log_mu(n, np.atleast_1d(np.asarray(tokens, float)), sched))

    def run_offset(self, run: str) -> tuple[np.ndarray, np.ndarray]:
        r"""Per posterior draw, the conditional mean and variance of a fitted run's log offset.

        The likelihood integrates each run's offset ``δ`` out; given a draw of
        the law and noise scales, ``δ`` given the run's residuals ``e_i = ln
        L_i - ln L̂_i`` is Gaussian: for an end-of-run fit (independent
        checkpoint noise) ``mean = ē σ_run² / (σ_run² + σ_obs²/n)``, ``var =
        σ_run² σ_obs²/n / (σ_run² + σ_obs²/n)``; for a whole-curve fit the
        AR(1) version (:func:`~hiscale.modeling.curve.offset_posterior`). With
        Student-t offsets and noise (end-of-run default) this is their
        Gaussian approximation, as in the likelihood's between-run term.

        Parameters
        ----------
        run : str
            A run of the fit's data.

        Returns
        -------
        mean, var : numpy.ndarray
            Shape ``(S,)`` each, in ln loss.

        Raises
        ------
        ValueError
            If the run is not in the fit.
        """
        data = self.data
        rows, resid = _run_residuals(
            data, np.asarray(self._dt["posterior"]["mu"].values), run, self.family
        )
        th = self.theta()
        if self.is_curve:
            t_obs = np.log(data["tokens"].to_numpy(float)[rows] / D0)
            return offset_posterior(
                resid, t_obs, th["sigma_run"], th["sigma_obs"], th["rho"], self.curve["ell"]
            )
        s2, o2 = th["sigma_run"] ** 2, th["sigma_obs"] ** 2 / len(rows)
        return resid.mean(1) * s2 / (s2 + o2), s2 * o2 / (s2 + o2)

    def predict_curve(
        self,
        params: float,
        run_tokens: float,
        *,
        schedule=None,
        tokens=None,
        ci_prob: float | Sequence[float] = DEFAULT_CI_PROB,
        seed: int = 0,
        n_points: int = 64,
        return_draws: bool = False,
    ) -> pd.DataFrame | tuple[pd.DataFrame, np.ndarray]:
        """Predict the whole curve of a run of size ``params`` under a schedule, with bands.

        Two kinds, as :meth:`predict`: ``expected`` (the law along the run,
        parameter uncertainty only) and ``new_run`` (one new training run:
        adds a run offset ``σ_run z`` and a stationary AR(1) path in ``ln D``
        drawn jointly along the grid, so its band is that of a whole curve).

        Parameters
        ----------
        params : float
            Model size N.
        run_tokens : float
            The run's planned length (the schedule's horizon).
        schedule : None, str or Schedule
            See :meth:`target_schedule` (default: the family's usual schedule).
        tokens : array_like, optional
            Checkpoints to predict; default ``n_points`` log-spaced from
            ``max(curve_start, 0.01) x run_tokens`` to ``run_tokens``.
        ci_prob : float or sequence of float
            Central interval probabilities.
        seed : int
            Seed of the new-run draws: ``numpy.random.default_rng(seed)`` draws
            the offsets ``(S,)``, then the AR(1) innovations ``(S, M)``.
        n_points : int
            Grid size when ``tokens`` is not given.
        return_draws : bool, default False
            Also return the new-run draws ``(S, M)`` along the (sorted) grid.

        Returns
        -------
        pandas.DataFrame
            One row per (token, kind, ci_prob): ``tokens, kind, ci_prob, lower,
            upper, median, mean``. ``frame.attrs`` holds ``family``,
            ``params``, ``run_tokens``, ``schedule`` (in words),
            ``schedule_fields``, ``seed`` and ``flagged``. With
            ``return_draws``: ``(frame, draws)``.

        Raises
        ------
        ValueError
            If the fit is not a whole-curve fit, a value is not finite and > 0,
            or a ``ci_prob`` is outside (0, 1).
        RuntimeError
            If JAX's 64-bit mode is off (call :func:`hiscale.configure` first).
        """
        require_x64("Fit.predict_curve")
        if not self.is_curve:
            raise ValueError("predict_curve needs a whole-curve fit (FitOptions(residual='ar1'))")
        levels = _levels(ci_prob)
        n, t_end = _positive("params", params), _positive("run_tokens", run_tokens)
        if tokens is None:
            d = self._curve_grid(t_end, n_points)
        else:
            d = np.sort(np.atleast_1d(np.asarray(tokens, float)))
            _positive("tokens", d)
        sched, desc = self.target_schedule(schedule, t_end)
        mu = self._log_mu(n, d, sched)
        th = self.theta()
        rng = np.random.default_rng(seed)
        offset = th["sigma_run"] * rng.standard_normal(len(th["sigma_run"]))
        u = ar1_paths(rng, np.log(d / D0), None, th["sigma_obs"], th["rho"], self.curve["ell"])
        arrays = {"expected": np.exp(mu), "new_run": np.exp(mu + offset[:, None] + u)}
        frame = _summary_frame(arrays, d, levels)
        frame.attrs.update(
            family=self.family,
            params=n,
            run_tokens=t_end,
            schedule=desc,
            schedule_fields=None if sched is None else dict(sched.__dict__),
            seed=int(seed),
            flagged=self.flagged,
        )
        return (frame, arrays["new_run"]) if return_draws else frame

    def predict_run(
        self,
        run: str,
        tokens=None,
        *,
        ci_prob: float | Sequence[float] = DEFAULT_CI_PROB,
        seed: int = 0,
        n_points: int = 32,
        return_draws: bool = False,
        schedule=None,
        run_tokens: float | None = None,
        decay_start: float | None = None,
    ) -> pd.DataFrame | tuple[pd.DataFrame, np.ndarray]:
        r"""Continue a fitted run to the end of its schedule, with its own offset and AR state.

        Per posterior draw, the run's offset ``δ`` is drawn from its Gaussian
        conditional given the run's residuals
        (:func:`~hiscale.modeling.curve.offset_posterior`), and the AR(1)
        path continues from ``u_n = e_n - δ`` at the run's last fitted row
        (Markov, so the rows before add nothing given ``δ``); the exact
        conditional moments are :func:`~hiscale.modeling.curve.continuation_moments`.

        Parameters
        ----------
        run : str
            A run of the fit's data.
        tokens : array_like, optional
            Checkpoints at or after the run's last fitted row; default
            ``n_points`` log-spaced from there to its schedule's horizon.
        ci_prob : float or sequence of float
            Central interval probabilities.
        seed : int
            Seed: ``numpy.random.default_rng(seed)`` draws the offsets
            ``(S,)``, then the AR(1) innovations ``(S, M)``.
        n_points : int
            Grid size when ``tokens`` is not given.
        return_draws : bool, default False
            Also return the ``this_run`` draws (the backtest scores them).
        schedule : None, str or Schedule
            The schedule the run continues under. ``None``: its own. A name
            of :data:`~hiscale.data.schedule.NAMED_SCHEDULES` (e.g. ``"wsd"``):
            the run's own warmup and stable phase, then that decay over
            ``run_tokens`` (default: its own horizon) starting at
            ``decay_start`` (:func:`~hiscale.data.schedule.with_decay`): "if I
            cool this run down from here, where does it end?". A
            :class:`~hiscale.data.schedule.Schedule`: used as given. Either
            way its learning rate must equal the run's own up to the run's
            last fitted row (the fitted rows cannot change their past); a
            difference is a one-line error.
        run_tokens, decay_start : float, optional
            Horizon and decay start of a named ``schedule``.

        Returns
        -------
        pandas.DataFrame
            One row per (token, kind, ci_prob): ``tokens, kind, ci_prob, lower,
            upper, median, mean``; kinds ``expected`` (the law) and
            ``this_run`` (the run's continuation). ``frame.attrs``: ``family``,
            ``run``, ``params``, ``last_tokens``, ``last_loss``,
            ``run_tokens`` (horizon), ``schedule`` (the schedule used, in
            words), ``schedule_note``, ``seed``, ``flagged``.
            With ``return_draws``: ``(frame, draws)``, ``draws`` the run's
            continuation ``(S, M)`` at the sorted ``tokens``.

        Raises
        ------
        ValueError
            If the fit is not a whole-curve fit, the run is not in it, a
            checkpoint lies before its last fitted row, or ``tokens`` is not
            given and the run's schedule is unknown.
        RuntimeError
            If JAX's 64-bit mode is off (call :func:`hiscale.configure` first).
        """
        require_x64("Fit.predict_run")
        if not self.is_curve:
            raise ValueError("predict_run needs a whole-curve fit (FitOptions(residual='ar1'))")
        levels = _levels(ci_prob)
        data = self.data
        rows = np.flatnonzero(data["run"].to_numpy() == str(run))
        if len(rows) == 0:
            raise ValueError(f"run {run!r} is not in the fit of {self.family!r}")
        d_obs = data["tokens"].to_numpy(float)[rows]
        n = float(data["params"].iloc[rows[0]])
        sched, used = self._continuation_schedule(
            str(run), d_obs[-1], schedule, run_tokens, decay_start
        )
        if tokens is None:
            if sched is None:
                raise ValueError(f"run {run!r}: schedule unknown, give tokens=")
            if sched.horizon <= d_obs[-1]:
                raise ValueError(
                    f"run {run!r} is already at the end of its schedule "
                    f"({d_obs[-1]:.4g} of {sched.horizon:.4g} tokens): give tokens="
                )
            d = np.geomspace(d_obs[-1], sched.horizon, n_points + 1)[1:]
        else:
            d = np.sort(np.atleast_1d(np.asarray(tokens, float)))
            _positive("tokens", d)
            if d[0] < d_obs[-1]:
                raise ValueError(
                    f"tokens: {d[0]:.4g} lies before run {run!r}'s last fitted row "
                    f"({d_obs[-1]:.4g} tokens)"
                )
        mu_new = self._log_mu(n, d, sched)
        mu_obs = np.asarray(self._dt["posterior"]["mu"].values).reshape(-1, len(data))[:, rows]
        resid = np.log(data["loss"].to_numpy(float)[rows])[None, :] - mu_obs
        th = self.theta()
        ell = self.curve["ell"]
        t_obs = np.log(d_obs / D0)
        m, v = offset_posterior(resid, t_obs, th["sigma_run"], th["sigma_obs"], th["rho"], ell)
        rng = np.random.default_rng(seed)
        delta = m + np.sqrt(v) * rng.standard_normal(len(m))
        u = ar1_paths(
            rng,
            np.log(d / D0),
            (t_obs[-1], resid[:, -1] - delta),
            th["sigma_obs"],
            th["rho"],
            ell,
        )
        arrays = {"expected": np.exp(mu_new), "this_run": np.exp(mu_new + delta[:, None] + u)}
        frame = _summary_frame(arrays, d, levels)
        frame.attrs.update(
            family=self.family,
            run=str(run),
            params=n,
            last_tokens=float(d_obs[-1]),
            last_loss=float(data["loss"].iloc[rows[-1]]),
            run_tokens=None if sched is None else float(sched.horizon),
            schedule=used,
            schedule_note=self.curve.get("schedule_notes", {}).get(str(run), ""),
            seed=int(seed),
            flagged=self.flagged,
        )
        return (frame, arrays["this_run"]) if return_draws else frame

    def _continuation_schedule(self, run, last, schedule, run_tokens, decay_start):
        """Return the schedule a run continues under (:meth:`predict_run`) and its description."""
        from hiscale.data.schedule import Schedule, with_decay

        own = self._schedule_of(run)
        if schedule is None:
            if run_tokens is not None or decay_start is not None:
                raise ValueError("run_tokens and decay_start need a named schedule=")
            return own, "the run's own schedule"
        if own is None:
            raise ValueError(
                f"run {run!r}: its own schedule is unknown, so a new schedule cannot be checked "
                "against its past"
            )
        if isinstance(schedule, Schedule):
            if run_tokens is not None or decay_start is not None:
                raise ValueError("run_tokens and decay_start apply to a named schedule only")
            sched = schedule
            used = f"given schedule ({sched.decay_shape} decay, horizon {sched.horizon:.4g} tokens)"
        else:
            horizon = own.horizon if run_tokens is None else _positive("run_tokens", run_tokens)
            sched = with_decay(own, str(schedule), horizon, decay_start)
            used = (
                f"the run's own warmup and stable phase, then {schedule} decay "
                f"({sched.decay_shape} to {sched.floor:g} x peak) from "
                f"{sched.start_of_decay:.4g} to {sched.horizon:.4g} tokens"
            )
        fitted = self.data.loc[self.data["run"] == run, "tokens"].to_numpy(float)
        u = np.union1d(np.linspace(0.0, last, 4097), fitted)
        h_own, h_new = own.multiplier(u), sched.multiplier(u)
        bad = np.flatnonzero(np.abs(h_new - h_own) > 1e-9)
        if len(bad):
            i = bad[0]
            raise ValueError(
                f"schedule: learning-rate multiplier {h_new[i]:.4g} at {u[i]:.4g} tokens, but run "
                f"{run!r} had {h_own[i]:.4g} there (fitted up to {last:.4g} tokens): a "
                "continuation cannot change the run's past"
            )
        return sched, used

    # ------------------------------------------------------------ prediction
    def draws(self, params, tokens, *, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
        """Posterior-predictive draws of the expected loss and of a new run.

        ``expected = L̂(N, D)``; ``new_run = L̂ exp(sigma_run t_run + sigma_obs
        t_obs)`` with ``t`` Student-t draws of the model's degrees of freedom,
        one fresh run offset per draw and target point.

        Whole-curve fits (:attr:`is_curve`): each point is the *end* of a run
        of ``D`` tokens under the family's usual schedule stretched to ``D``
        (:meth:`target_schedule`; :meth:`predict_curve` takes other
        schedules and horizons), and the new-run noise is Gaussian, as in
        that model: ``sigma_run z_run + sigma_obs z_obs`` (the AR(1)'s
        stationary sd at one point).

        Parameters
        ----------
        params, tokens : float or array_like
            Model size(s) N and token count(s) D (broadcast to ``M`` points).
        seed : int
            Seed of the new-run noise: ``numpy.random.default_rng(seed)`` draws
            all ``t_run`` (shape ``(S, M)``), then all ``t_obs`` (standard
            normals for whole-curve fits).

        Returns
        -------
        expected, new_run : numpy.ndarray
            Losses in nats, each ``(S, M)``.

        Raises
        ------
        RuntimeError
            If JAX's 64-bit mode is off (call :func:`hiscale.configure` first).
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
        if self.is_curve:
            mu = np.concatenate(
                [
                    self._log_mu(nj, np.array([dj]), self.target_schedule(None, dj)[0])
                    for nj, dj in zip(n, d, strict=True)
                ],
                axis=1,
            )
            rng = np.random.default_rng(seed)
            z_run = rng.standard_normal(mu.shape)
            z_obs = rng.standard_normal(mu.shape)
            new = mu + th["sigma_run"][:, None] * z_run + th["sigma_obs"][:, None] * z_obs
            return np.exp(mu), np.exp(new)
        mu = np.asarray(law.log_loss(x, y, theta))
        s = self.prior.settings
        rng = np.random.default_rng(seed)
        t_run = stats.t.rvs(s["df_run"], size=mu.shape, random_state=rng)
        t_obs = stats.t.rvs(s["df_obs"], size=mu.shape, random_state=rng)
        new = mu + th["sigma_run"][:, None] * t_run + th["sigma_obs"][:, None] * t_obs
        return np.exp(mu), np.exp(new)

    def new_run_draws(self, rows: pd.DataFrame, *, seed: int = 0) -> np.ndarray:
        """New-run draws at the checkpoints ``rows``, as each kind of fit predicts a fresh run.

        End-of-run fits: :meth:`draws` at each row's ``(params, tokens)``.
        Whole-curve fits: each run of ``rows`` is a new run of its size over
        its own horizon (``run_tokens`` where given, else its last row's
        tokens) under the family's usual schedule (:meth:`predict_curve`,
        seed ``seed + j`` for the ``j``-th run in the rows' order), drawn
        jointly along that run.

        Parameters
        ----------
        rows : pandas.DataFrame
            Columns ``params``, ``tokens`` (and ``run`` for whole-curve fits;
            ``run_tokens`` optional).
        seed : int
            Seed of the new-run noise.

        Returns
        -------
        numpy.ndarray
            ``(S, len(rows))`` losses in nats, in the rows' order.
        """
        if not self.is_curve:
            return self.draws(rows["params"].to_numpy(), rows["tokens"].to_numpy(), seed=seed)[1]
        out = np.empty((len(self.theta()["sigma_run"]), len(rows)))
        runs = rows["run"].astype(str).to_numpy()
        for j, (run, part) in enumerate(rows.groupby("run", sort=False)):
            tok = part["tokens"].to_numpy(float)
            horizon = float(tok.max())
            if "run_tokens" in part and np.isfinite(pd.to_numeric(part["run_tokens"]).max()):
                horizon = max(horizon, float(pd.to_numeric(part["run_tokens"]).max()))
            uniq, inv = np.unique(tok, return_inverse=True)
            _, draws = self.predict_curve(
                float(part["params"].iloc[0]), horizon, tokens=uniq, seed=seed + j,
                return_draws=True,
            )  # fmt: skip
            out[:, np.flatnonzero(runs == str(run))] = draws[:, inv]
        return out

    def predictions(self, at, *, seed: int = 0) -> xr.DataTree:
        """Return the predictive draws at target point(s) as an ArviZ ``predictions`` group.

        Parameters
        ----------
        at : tuple (N, D)
            Target model size(s) N and token count(s) D: scalars or arrays
            that broadcast to ``M`` points.
        seed : int
            Seed of the new-run noise (the draws of :meth:`draws`).

        Returns
        -------
        xarray.DataTree
            Group ``predictions`` with ``expected`` and ``new_run`` (losses,
            dims ``chain, draw, point``) and group ``predictions_constant_data``
            with ``params`` and ``tokens`` (dim ``point``); attributes
            ``family``, ``seed`` and ``flagged``. ``az.summary(tree,
            group="predictions", ci_prob=0.8)`` summarises it.

        Raises
        ------
        ValueError
            One line, when ``at`` is not a pair ``(N, D)`` of finite values > 0.
        RuntimeError
            If JAX's 64-bit mode is off (call :func:`hiscale.configure` first).
        """
        n, d = _target_point(at)
        expected, new = self.draws(n, d, seed=seed)
        post = self._dt["posterior"]
        chain, draw = post["chain"].values, post["draw"].values
        shape = (len(chain), len(draw), len(n))
        coords = {"chain": chain, "draw": draw, "point": np.arange(len(n))}
        dims = ("chain", "draw", "point")
        pred = xr.Dataset(
            {"expected": (dims, expected.reshape(shape)), "new_run": (dims, new.reshape(shape))},
            coords=coords,
        )
        const = xr.Dataset(
            {"params": ("point", n), "tokens": ("point", d)}, coords={"point": coords["point"]}
        )
        tree = xr.DataTree.from_dict({"predictions": pred, "predictions_constant_data": const})
        tree.attrs.update(family=self.family, seed=int(seed), flagged=int(self.flagged))
        return tree

    def predict(
        self,
        at,
        *,
        ci_prob: float | Sequence[float] = DEFAULT_CI_PROB,
        seed: int = 0,
        curve: bool = False,
        schedule=None,
        run_tokens: float | None = None,
    ) -> pd.DataFrame:
        """Median, mean and central intervals of the expected loss and of a new run.

        Parameters
        ----------
        at : tuple (N, D)
            Target model size(s) N and token count(s) D: scalars or arrays
            that broadcast to ``M`` points, each finite and > 0.
        ci_prob : float or sequence of float
            Central interval probabilities, each in (0, 1).
        seed : int
            Seed of the new-run noise draws (same seed -> identical numbers;
            the draws of :meth:`draws` and :meth:`predictions`).
        curve : bool, default False
            Whole-curve fits only: the whole curve of each target run instead
            of its end point: :meth:`predict_curve` of a run of size ``N`` over
            ``run_tokens`` (default ``D``) under ``schedule`` (default: the
            family's usual schedule; see :meth:`target_schedule`), seed
            ``seed + i`` for point ``i``, on 64 log-spaced checkpoints plus
            ``D``. Columns as below plus nothing new: ``tokens`` runs along
            each curve; ``frame.attrs["schedules"]`` says which schedule each
            point's run used.
        schedule, run_tokens : optional
            The target runs' schedule and planned length (``curve=True``).

        Returns
        -------
        pandas.DataFrame
            A tidy frame, one row per (point, kind, ci_prob), in that order
            (with ``curve=True``: per (point, tokens, kind, ci_prob)):

            ``point``
                Index of the target point (0 .. M-1).
            ``params``, ``tokens``
                The target point (N, D).
            ``kind``
                ``"expected"`` (the law at the point, parameter uncertainty
                only) or ``"new_run"`` (a new training run there: adds a run
                offset and checkpoint noise).
            ``ci_prob``
                Probability of the central interval.
            ``lower``, ``upper``
                The ``(1 - ci_prob) / 2`` and ``(1 + ci_prob) / 2`` quantiles
                of the draws (loss in nats).
            ``median``, ``mean``
                Of the draws (the same on every ``ci_prob`` row).
            ``flagged``
                True when the sampler failed a convergence threshold.

        Raises
        ------
        ValueError
            One line, when ``at`` is not a pair ``(N, D)``, a value is not
            finite and > 0, or a ``ci_prob`` is outside (0, 1).
        RuntimeError
            If JAX's 64-bit mode is off (call :func:`hiscale.configure` first).
        """
        levels = [ci_prob] if np.isscalar(ci_prob) else list(ci_prob)
        for lv in levels:
            if not 0 < float(lv) < 1:
                raise ValueError(f"ci_prob must be in (0, 1), got {lv}")
        n, d = _target_point(at)
        if curve:
            return self._predict_curves(n, d, levels, seed, schedule, run_tokens)
        if schedule is not None or run_tokens is not None:
            raise ValueError("schedule and run_tokens apply to curve=True (the whole curve)")
        expected, new = self.draws(n, d, seed=seed)
        rows = []
        for kind, arr in (("expected", expected), ("new_run", new)):
            median, mean = np.median(arr, axis=0), arr.mean(axis=0)
            for lv in levels:
                lo, hi = central_interval(arr, float(lv), axis=0)
                rows.append(
                    pd.DataFrame(
                        {
                            "point": np.arange(len(n)),
                            "params": n,
                            "tokens": d,
                            "kind": kind,
                            "ci_prob": float(lv),
                            "lower": lo,
                            "upper": hi,
                            "median": median,
                            "mean": mean,
                        }
                    )
                )
        frame = pd.concat(rows, ignore_index=True)
        order = {"expected": 0, "new_run": 1}
        frame = frame.sort_values(
            ["point", "kind", "ci_prob"],
            key=lambda s: s.map(order) if s.name == "kind" else s,
            kind="stable",
        ).reset_index(drop=True)
        frame["flagged"] = self.flagged
        return frame

    def _curve_grid(self, t_end: float, n_points: int) -> np.ndarray:
        """Return ``n_points`` log-spaced tokens from the curve start (>= 1%) to ``t_end``."""
        return np.geomspace(max(self.options.curve_start, 0.01) * t_end, t_end, n_points)

    def _predict_curves(self, n, d, levels, seed, schedule, run_tokens) -> pd.DataFrame:
        """:meth:`predict` with ``curve=True``: one :meth:`predict_curve` per target point."""
        if not self.is_curve:
            raise ValueError(
                "curve=True needs a whole-curve fit (FitOptions(rows='all', residual='ar1'))"
            )
        parts, schedules = [], []
        for i, (ni, di) in enumerate(zip(n, d, strict=True)):
            t_end = float(di) if run_tokens is None else _positive("run_tokens", run_tokens)
            grid = np.union1d(self._curve_grid(t_end, 64), [di])
            fr = self.predict_curve(
                float(ni), t_end, schedule=schedule, tokens=grid, ci_prob=levels, seed=seed + i
            )
            schedules.append(fr.attrs["schedule"])
            fr.insert(0, "point", i)
            fr.insert(1, "params", float(ni))
            parts.append(fr)
        frame = pd.concat(parts, ignore_index=True)
        frame["flagged"] = self.flagged
        frame.attrs.update(family=self.family, schedules=schedules, seed=int(seed))
        return frame

    # --------------------------------------------------------------- output
    def save(self, path: str | Path) -> Path:
        """Write the fit's DataTree as netCDF (h5netcdf engine).

        Parameters
        ----------
        path : str or Path
            File to write; :func:`load_fit` reads it back bit-identically.

        Returns
        -------
        Path
            ``path``.
        """
        path = Path(path)
        self._dt.to_netcdf(path, engine="h5netcdf")
        return path

    def verdict(self) -> str:
        """Summarise the sampler's verdict in one paragraph.

        Returns
        -------
        str
            r̂, ESS, divergences, tree-depth hits, E-BFMI and chain
            disagreement, ending in ``converged`` or ``NOT CONVERGED: reasons``
            (and, for a fit re-run after a flagged first run, ``(second run; the
            first was flagged: reasons)``).
        """
        d = self.diagnostics
        verdict = "NOT CONVERGED: " + d.get("reasons", "") if self.flagged else "converged"
        if self.retried:
            verdict += f" (second run; the first was flagged: {self.retried})"
        return (
            f"sampler: r_hat max {d['rhat_max']:.3f}, ESS min {d['ess_min']:.0f} "
            f"(tail {d['ess_tail_min']:.0f}), divergences {d['divergences']}, "
            f"max-depth hits {d['tree_depth_hits']}, "
            f"E-BFMI min {d.get('bfmi_min', float('nan')):.2f}, "
            f"chain disagreement {d['chain_disagreement']:.2f} sd -> {verdict}"
        )

    # ---------------------------------------------------------- construction
    @classmethod
    def from_samples(
        cls,
        *,
        family: str,
        law: str,
        prior: Prior,
        samples: dict[str, np.ndarray],
        sample_stats: dict[str, np.ndarray],
        diagnostics: dict[str, Any],
        sampler: SamplerSettings,
        options: FitOptions,
        seed: int,
        data: pd.DataFrame,
        log: Sequence[FilterRecord] = (),
        timings: dict[str, float] | None = None,
        provenance: dict[str, Any] | None = None,
        curve: dict[str, Any] | None = None,
    ) -> Fit:
        """Build the fit's DataTree from the sampler's output (done once).

        The posterior-predictive replicates are drawn here, once, from
        ``numpy.random.default_rng(seed)`` in this order: the fitted runs'
        offsets (standard normal, ``(chain, draw, run)``), the rows'
        checkpoint noise for ``log_loss`` (Student-t ``df_obs``, ``(chain,
        draw, row)``), then for ``run_log_loss`` a new run's offset
        (Student-t ``df_run``, ``(chain, draw, run)``) and its rows' noise
        (Student-t ``df_obs``, ``(chain, draw, row)``).

        Parameters
        ----------
        family, law : str
            Family name and law form.
        prior : Prior
            The prior the model used.
        samples : dict
            Site -> draws ``(chain, draw, ...)``: the law parameters,
            ``log_scale``, ``sigma_run``, ``sigma_obs`` and ``mu`` (per padded
            design row; the first ``len(data)`` are the real rows).
        sample_stats : dict
            Per-draw sampler statistics ``(chain, draw)``.
        diagnostics : dict
            The sampler's verdict (:func:`hiscale.infer.diagnostics.diagnose`).
        sampler : SamplerSettings
            NUTS settings.
        options : FitOptions
            Row selection and tempering.
        seed : int
            The fit's seed (also seeds the replicates above).
        data : pandas.DataFrame
            The rows the model saw, sorted as the design (``params, run,
            tokens``).
        log : sequence of FilterRecord
            What the selection removed.
        timings, provenance : dict, optional
            Seconds per step; data hash, version, notes, chain starts.
        curve : dict, optional
            Whole-curve fits (``options.residual == "ar1"``): ``ell``,
            ``decay``, each run's schedule (``schedules``, fields of
            :class:`~hiscale.data.schedule.Schedule`) and ``schedule_notes``;
            stored as the attribute ``curve_json``. Such fits get the AR(1)
            groups described in :meth:`_curve_groups` instead.

        Returns
        -------
        Fit

        Raises
        ------
        ValueError
            If ``data`` is not sorted as the design (``params, run, tokens``):
            the per-run likelihood would pair draws with the wrong rows.
        RuntimeError
            If JAX's 64-bit mode is off (call :func:`hiscale.configure` first).
        """
        require_x64("Fit.from_samples")
        law_obj = get_law(law)
        names = (*law_obj.params, "log_scale", "sigma_run", "sigma_obs")
        if options.curve:
            names = (*names, "rho")
        if getattr(options, "local_learn", False):
            names = (*names, "local_sd")
        post = {n: np.asarray(samples[n], dtype=float) for n in names}
        for name in ("alpha", "beta"):
            if f"log_{name}" in post:
                post[name] = np.exp(post[f"log_{name}"])
        data = data.reset_index(drop=True)
        runs = list(dict.fromkeys(data["run"].tolist()))
        run_idx = data["run"].map({r: i for i, r in enumerate(runs)}).to_numpy(int)
        n_rows, n_runs = len(data), len(runs)
        mu = np.asarray(samples["mu"], dtype=float)[..., :n_rows]
        post["mu"] = mu
        obs = np.log(data["loss"].to_numpy(float))
        s = prior.settings
        c, d = mu.shape[:2]
        if options.curve:
            groups = _curve_groups(data, law_obj, post, obs, run_idx, runs, seed, curve or {})
            return cls._build(
                groups, data, runs, run_idx, post, sample_stats, family, law_obj, seed,
                prior, diagnostics, sampler, options, timings, provenance, log, curve,
            )  # fmt: skip
        # per-run log-likelihood, run offset integrated out (leave-one-run-out PSIS-LOO),
        # on the design's padded (bucketed) arrays so one compiled kernel serves many fits
        design = make_design(data, **options.design_kwargs())
        if design.run_names != tuple(runs) or design.n_rows != n_rows:
            raise ValueError("Fit.from_samples: data must be sorted by params, run, tokens")
        resid = np.zeros((c * d, len(design.mask)))
        resid[:, :n_rows] = (obs - mu).reshape(c * d, n_rows)
        loglik = np.asarray(
            _run_loglik_draws(
                jnp.asarray(resid),
                jnp.asarray(design.run),
                jnp.asarray(design.weight),
                jnp.asarray(design.mask),
                design.n_runs_padded,
                jnp.asarray(post["sigma_run"].reshape(-1)),
                jnp.asarray(post["sigma_obs"].reshape(-1)),
                float(s["df_run"]),
                float(s["df_obs"]),
                None if design.run_local is None else _local_arrays(design.run_local),
                None if "local_sd" not in post else jnp.asarray(post["local_sd"].reshape(-1)),
            )
        )[:, :n_runs].reshape(c, d, n_runs)
        rng = np.random.default_rng(seed)
        sig_run = post["sigma_run"][..., None]
        sig_obs = post["sigma_obs"][..., None]
        # replicated rows of the fitted runs: each run's offset from its
        # conditional given the run's rows (Gaussian approximation) + new noise
        resid = obs - mu
        n_r = np.bincount(run_idx, minlength=n_runs).astype(float)
        rbar = _run_means(resid, run_idx, n_runs)
        vr = sig_run**2
        if design.run_local is not None:
            # a local fit: each run's offset variance includes the law's error there
            loc = design.run_local
            var_unit = (np.sum(loc["U"] ** 2, axis=1) + loc["bridge"])[:n_runs]
            sd = post["local_sd"][..., None] if "local_sd" in post else loc["sd"]
            vr = vr + sd**2 * var_unit
        vo = sig_obs**2 / n_r
        shrink = vr / (vr + vo)
        delta = shrink * rbar + np.sqrt(shrink * vo) * rng.standard_normal(rbar.shape)
        rep = (
            mu
            + delta[..., run_idx]
            + sig_obs * stats.t.rvs(s["df_obs"], size=mu.shape, random_state=rng)
        )
        # a NEW run at each run's rows (fresh offset and noise): its mean log loss
        t_run = stats.t.rvs(s["df_run"], size=(c, d, n_runs), random_state=rng)
        t_obs = stats.t.rvs(s["df_obs"], size=mu.shape, random_state=rng)
        new_rows = mu + sig_run * t_run[..., run_idx] + sig_obs * t_obs
        groups = {
            "log_likelihood": {"run_log_loss": loglik},
            "posterior_predictive": {
                "log_loss": rep,
                "run_log_loss": _run_means(new_rows, run_idx, n_runs),
            },
            "constant_data": {},
        }
        return cls._build(
            groups, data, runs, run_idx, post, sample_stats, family, law_obj, seed,
            prior, diagnostics, sampler, options, timings, provenance, log, curve,
        )  # fmt: skip

    @classmethod
    def _build(
        cls, groups, data, runs, run_idx, post, sample_stats, family, law_obj, seed,
        prior, diagnostics, sampler, options, timings, provenance, log, curve,
    ) -> Fit:  # fmt: skip
        """Assemble the DataTree of :meth:`from_samples` from its computed groups."""
        import arviz as az

        n_rows, n_runs = len(data), len(runs)
        obs = np.log(data["loss"].to_numpy(float))
        extra_const = groups["constant_data"]
        dt = az.from_dict(
            {
                "posterior": post,
                "sample_stats": {k: np.asarray(v) for k, v in sample_stats.items()},
                "log_likelihood": groups["log_likelihood"],
                "posterior_predictive": groups["posterior_predictive"],
                "observed_data": {
                    "log_loss": obs,
                    "run_log_loss": _run_means(obs, run_idx, n_runs),
                },
                "constant_data": {
                    "params": data["params"].to_numpy(float),
                    "tokens": data["tokens"].to_numpy(float),
                    "loss": data["loss"].to_numpy(float),
                    "run_index": run_idx,
                    **extra_const,
                },
            },
            dims={
                "mu": ["row"],
                "run_log_loss": ["run"],
                "log_loss": ["row"],
                "params": ["row"],
                "tokens": ["row"],
                "loss": ["row"],
                "run_index": ["row"],
                **{k: ["row"] for k in extra_const},
            },
            coords={"run": [str(r) for r in runs], "row": np.arange(n_rows)},
        )
        settings = {
            "prior": prior.to_dict(),
            "diagnostics": diagnostics,
            "sampler": sampler.to_dict(),
            "options": options.to_dict(),
            "timings": dict(timings or {}),
            "provenance": dict(provenance or {}),
            "log": [r.__dict__ for r in log],
        }
        dt.attrs = {
            "hiscale_format": FIT_FORMAT,
            "hiscale_version": __version__,
            "family": str(family),
            "law": law_obj.name,
            "seed": int(seed),
            **{f"{k}_json": json.dumps(settings[k], default=json_default) for k in _JSON_ATTRS},
        }
        if options.curve:
            dt.attrs["curve_json"] = json.dumps(curve or {}, default=json_default)
        return cls(dt)


@partial(jax.jit, static_argnums=4)
def _run_loglik_draws(
    resid, run, weight, mask, n_runs, sigma_run, sigma_obs, df_run, df_obs, local=None,
    local_sd=None,
):  # fmt: skip
    """:func:`~hiscale.modeling.family.run_loglik` of every draw: ``(S, n_runs)``.

    ``local_sd`` (per draw) replaces ``local["sd"]`` when the scale was learned.
    """
    if local_sd is None:
        return jax.vmap(
            lambda r, sr, so: run_loglik(
                r, run, weight, mask, n_runs, sr, so, df_run, df_obs, local=local
            )
        )(resid, sigma_run, sigma_obs)
    return jax.vmap(
        lambda r, sr, so, ls: run_loglik(
            r, run, weight, mask, n_runs, sr, so, df_run, df_obs, local={**local, "sd": ls}
        )
    )(resid, sigma_run, sigma_obs, local_sd)


def _local_arrays(local: dict) -> dict:
    """Return the local fit's arrays for the per-run likelihood (no prior entry)."""
    return {k: jnp.asarray(local[k]) for k in ("U", "bridge", "sd")}


def _run_residuals(data: pd.DataFrame, mu, run, family) -> tuple[np.ndarray, np.ndarray]:
    """Return a fitted run's rows sorted by tokens and its residuals ``ln L - ln L̂`` per draw.

    ``mu``: the posterior's ``mu`` (any leading chain/draw shape, rows last).
    Returns ``rows (n,)`` and ``resid (S, n)``; one-line error if ``run`` is not in ``data``.
    """
    rows = np.flatnonzero(data["run"].to_numpy().astype(str) == str(run))
    if not len(rows):
        raise ValueError(f"run {run!r} is not in the fit of {family!r}")
    rows = rows[np.argsort(data["tokens"].to_numpy()[rows], kind="stable")]
    mu_obs = np.asarray(mu).reshape(-1, len(data))[:, rows]
    return rows, np.log(data["loss"].to_numpy(float)[rows])[None, :] - mu_obs


#: Schedule covariates stored per row in ``constant_data`` of whole-curve fits.
_COVARIATE_COLUMNS = ("lr_mult", "s1", "s2", "anneal", "memory_tokens")


def _curve_groups(data, law_obj, post, obs, run_idx, runs, seed, curve) -> dict:
    """``log_likelihood``, ``posterior_predictive`` and covariates of a whole-curve fit.

    ``log_likelihood.run_log_loss``: each run's exact offset + AR(1) log
    density (:func:`~hiscale.modeling.curve.run_loglik_ar1`), so ``az.loo``
    on it is leave-one-run-out. Replicates from
    ``numpy.random.default_rng(seed)`` (:func:`~hiscale.modeling.curve.replicate_runs`):
    ``log_loss``, each fitted run with its offset drawn from its Gaussian
    conditional and a fresh stationary AR(1) path; ``run_log_loss``, the mean
    log loss of a new run (new offset, fresh path) at each run's rows.
    """
    n_rows, n_runs = len(data), len(runs)
    ell = float(curve.get("ell", 1.0))
    design = make_curve_design(data, law_obj)
    if design.run_names != tuple(runs) or design.n_rows != n_rows:
        raise ValueError("Fit.from_samples: data must be sorted by params, run, tokens")
    mu = post["mu"]
    c, d = mu.shape[:2]
    flat_mu = mu.reshape(c * d, n_rows)
    sr = post["sigma_run"].reshape(-1)
    so = post["sigma_obs"].reshape(-1)
    rho = post["rho"].reshape(-1)
    t = np.log(data["tokens"].to_numpy(float) / D0)
    loglik, rep, run_rep = replicate_runs(
        flat_mu, obs, t, run_idx, sr, so, rho, ell, rng=np.random.default_rng(seed)
    )
    const = {k: data[k].to_numpy(float) for k in _COVARIATE_COLUMNS if k in data}
    return {
        "log_likelihood": {"run_log_loss": loglik.reshape(c, d, n_runs)},
        "posterior_predictive": {
            "log_loss": rep.reshape(c, d, n_rows),
            "run_log_loss": run_rep.reshape(c, d, n_runs),
        },
        "constant_data": const,
    }


def _run_means(values: np.ndarray, run_idx: np.ndarray, n_runs: int) -> np.ndarray:
    """Mean of ``values`` (``(..., row)``) over each run's rows: ``(..., run)``."""
    flat = values.reshape(-1, values.shape[-1])
    n_r = np.bincount(run_idx, minlength=n_runs).astype(float)
    # one bincount over (draw, run) bins: each bin sums its rows in row order
    bins = (run_idx[None, :] + n_runs * np.arange(len(flat))[:, None]).ravel()
    sums = np.bincount(bins, weights=flat.ravel(), minlength=len(flat) * n_runs)
    return (sums.reshape(len(flat), n_runs) / n_r).reshape(*values.shape[:-1], n_runs)


def _levels(ci_prob) -> list[float]:
    """Interval probabilities as a list, each checked to lie in (0, 1)."""
    levels = [ci_prob] if np.isscalar(ci_prob) else list(ci_prob)
    for lv in levels:
        if not 0 < float(lv) < 1:
            raise ValueError(f"ci_prob must be in (0, 1), got {lv}")
    return [float(lv) for lv in levels]


def _positive(name: str, value):
    """``value`` as float(s), one-line error unless finite and > 0."""
    v = np.asarray(value, dtype=float)
    if not np.all(np.isfinite(v)) or np.any(v <= 0):
        raise ValueError(f"{name} must be finite and > 0, got {v.tolist()}")
    return float(v) if v.ndim == 0 else v


def _summary_frame(arrays: dict[str, np.ndarray], tokens, levels) -> pd.DataFrame:
    """Tidy frame ``tokens, kind, ci_prob, lower, upper, median, mean`` of draws ``(S, M)``."""
    parts = []
    for kind, arr in arrays.items():
        median, mean = np.median(arr, axis=0), arr.mean(axis=0)
        for lv in levels:
            lo, hi = central_interval(arr, lv, axis=0)
            parts.append(
                pd.DataFrame(
                    {
                        "tokens": tokens,
                        "kind": kind,
                        "ci_prob": lv,
                        "lower": lo,
                        "upper": hi,
                        "median": median,
                        "mean": mean,
                    }
                )
            )
    return pd.concat(parts, ignore_index=True)


def _target_point(at) -> tuple[np.ndarray, np.ndarray]:
    """``at = (N, D)`` as two broadcast 1-d float arrays (one-line error otherwise)."""
    if isinstance(at, (str, bytes)) or not isinstance(at, Sequence | np.ndarray) or len(at) != 2:
        raise ValueError(f"at must be a target point (N, D), got {at!r}")
    n = np.atleast_1d(np.asarray(at[0], dtype=float))
    d = np.atleast_1d(np.asarray(at[1], dtype=float))
    for name, v in (("params N", n), ("tokens D", d)):
        if not np.all(np.isfinite(v)) or np.any(v <= 0):
            raise ValueError(f"at: {name} must be finite and > 0, got {v.tolist()}")
    n, d = np.broadcast_arrays(n, d)
    return n.reshape(-1), d.reshape(-1)


def load_fit(path: str | Path) -> Fit:
    """Read a fit written by :meth:`Fit.save`.

    Parameters
    ----------
    path : str or Path
        A netCDF file written by :meth:`Fit.save`.

    Returns
    -------
    Fit
        The same fit: every draw, setting and prediction bit-identical.

    Raises
    ------
    ValueError
        One line, when the file is missing, not a hiscale fit, or written in
        another format version.
    """
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"fit file not found: {str(path)!r}")
    try:
        tree = xr.open_datatree(path, engine="h5netcdf")
    except Exception as err:
        raise ValueError(
            f"{str(path)!r} is not a hiscale fit (cannot read netCDF: {type(err).__name__})"
        ) from None
    try:
        attrs = dict(tree.attrs)
        fmt = attrs.get("hiscale_format")
        if fmt is None:
            raise ValueError(f"{str(path)!r} is not a hiscale fit (no hiscale_format attribute)")
        if fmt != FIT_FORMAT:
            raise ValueError(
                f"{str(path)!r} was written in format {fmt!r} "
                f"(hiscale {attrs.get('hiscale_version')}); "
                f"this hiscale ({__version__}) reads {FIT_FORMAT!r}"
            )
        dt = tree.load()
    finally:
        tree.close()
    return Fit(dt)
