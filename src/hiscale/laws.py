"""Scaling laws as pure ``jax.numpy`` functions.

Two parameterisations of the same family of curves are used:

*Paper form* (Hoffmann et al. 2022; Choshen et al. 2025), used by the
least-squares estimator::

    L(N, D) = exp(e) + exp(a) / N**alpha + exp(b) / D**beta

*Share form*, used by the Bayesian models because its parameters are
unit-free and therefore comparable across families with different losses.
With reference scales ``N0 = 1e9`` parameters and ``D0 = 1e11`` tokens,
``x = ln(N/N0)`` and ``y = ln(D/D0)``::

    L(N, D) = s * (e + a * exp(-alpha x) + b * exp(-beta y) * g(x))

with shares ``(e, a, b) = softmax(0, u_a, u_b)`` (so ``e + a + b = 1`` and
``s`` is the loss at ``(N0, D0)`` when ``g = 1``). ``u_a = ln(a/e)`` and
``u_b = ln(b/e)`` are log share ratios; ``alpha = exp(log_alpha)``,
``beta = exp(log_beta)``.

Law forms differ only in ``g``:

* ``chinchilla``: ``g(x) = 1`` (separable, the paper's law);
* ``chinchilla-nd``: ``g(x) = exp(gamma x)``, a data term whose size depends
  on the model size, which lets the drop of loss along ``D`` grow (``gamma >
  0``) or shrink with ``N`` as intermediate checkpoints of real runs do.

A law is a :class:`Law` object; callers use ``law.log_loss(x, y, theta)``
with ``theta`` a mapping of named parameter arrays, so a new form plugs in by
adding an entry to :data:`LAWS`.

*Curve laws* (:data:`CURVE_LAWS`) describe a whole training curve under its
learning-rate schedule and need per-row *covariates* besides ``x, y``: the
columns of :func:`hiscale.data.schedule.reconstruct` (``s1`` = area under
the LR multiplier in tokens, ``anneal`` = ``S2 / τ`` the momentum law's
annealing area in units of its memory, ``lr_mult`` = ``h``). They are called
as ``law.log_loss(x, y, theta, covariates)``; ``Law.covariates`` names what a
law needs (empty for the end-of-run laws, whose numbers do not change). With
``f = e exp(u_f)`` (``u_f = ln(f/e)``, unit-free like ``u_a, u_b``) and a size
exponent ``r_f`` of the annealing bonus:

* ``momentum`` (Tissue et al. 2024 with a size term):
  ``L = s (e + a (N/N0)^-alpha + b (S1/D0)^-beta - f anneal (N/N0)^r_f)``;
* ``h-term``:
  ``L = s (e + a (N/N0)^-alpha + b (D/D0)^-beta - f (1 - h) (N/N0)^r_f)``;
* ``h-rel`` (experimental; the bonus bounded by the reducible loss):
  ``L = s (e + (a (N/N0)^-alpha + b (D/D0)^-beta) (1 - (1 - h) q))`` with
  ``q = sigmoid(v_f + r_f ln(N/N0))``: full annealing removes the fraction ``q``
  of the reducible loss, so the prediction stays above ``s e`` at any size.
  (The bonus of ``h-term`` and ``momentum`` grows like ``N^r_f`` without bound
  and, fitted with a population prior on the other terms, once predicted a
  loss of 0.015 for gpt3's 175B run; see the README.)

For a constant LR without warmup (``S1 = D``, ``anneal = 0``, ``h = 1``) both
are the separable law. The bonus is capped at 99.9% of the other terms
(``L > 0``; the cap is inactive at any sensible fit).

References
----------
Hoffmann et al. (2022), "Training Compute-Optimal Large Language Models".
Choshen, Zhang & Andreas (2025), "A Hitchhiker's Guide to Scaling Law Estimation".
Tissue et al. (2024), "Scaling Law with Learning Rate Annealing", arXiv 2408.11029.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass

import jax
import jax.numpy as jnp
import numpy as np

__all__ = [
    "CURVE_LAWS",
    "D0",
    "LAWS",
    "N0",
    "Law",
    "get_law",
    "paper_law",
    "share_to_paper",
]

N0: float = 1e9
D0: float = 1e11


def paper_law(n, d, a, b, e, alpha, beta):
    """Chinchilla law in the paper's parameterisation.

    ``L = exp(e) + exp(a) N**-alpha + exp(b) D**-beta``. Works on NumPy or JAX
    arrays (broadcasting), and under ``jit``/``vmap``. Written exactly as the
    paper's code evaluates it (``exp(a) / N**alpha``): the least-squares fit is
    ill-conditioned enough that rewriting it as ``exp(a - alpha ln N)`` moves
    the optimum of some cells (GPT-3 k=2, p=1: 11.2% instead of 10.36% ARE).
    """
    xp = jnp if any(isinstance(v, jnp.ndarray) for v in (n, d, a, b, e)) else np
    return xp.exp(e) + xp.exp(a) / n**alpha + xp.exp(b) / d**beta


def _shares(u_a, u_b):
    """``(ln e, ln a, ln b)`` from the log share ratios ``u_a = ln a/e``, ``u_b = ln b/e``."""
    lse = jnp.logaddexp(jnp.logaddexp(0.0, u_a), u_b)
    return -lse, u_a - lse, u_b - lse


def _log_loss_chinchilla_nd(x, y, theta):
    """``ln L`` for the N-dependent data term (``gamma`` defaults to 0)."""
    ln_e, ln_a, ln_b = _shares(theta["u_a"], theta["u_b"])
    gamma = theta.get("gamma", 0.0)
    alpha = jnp.exp(theta["log_alpha"])
    beta = jnp.exp(theta["log_beta"])
    terms = jnp.stack(
        jnp.broadcast_arrays(ln_e + 0.0 * x, ln_a - alpha * x, ln_b - beta * y + gamma * x),
        axis=0,
    )
    m = terms.max(0)
    return theta["log_scale"] + jnp.log(jnp.sum(jnp.exp(terms - m), 0)) + m


def _log_loss_chinchilla(x, y, theta):
    """``ln L`` for the separable law: ``g = 1`` even if ``theta`` carries a ``gamma``."""
    return _log_loss_chinchilla_nd(x, y, {k: v for k, v in theta.items() if k != "gamma"})


#: Largest annealing bonus as a fraction of the other terms (keeps ``L > 0``).
_MAX_BONUS: float = 0.999


def _log_loss_annealed(x, y_data, bonus, theta):
    """``ln L = ln s + ln(P - Q)`` with ``P`` the separable terms at ``y_data``.

    ``Q = f bonus (N/N0)^r_f`` with ``f = e exp(u_f)``; ``ln(P - Q) = ln P +
    ln(1 - min(Q/P, _MAX_BONUS))``, computed as ``ln e + M + ln max(P' - Q',
    (1 - _MAX_BONUS) P')`` with ``P' = P e^-M / e = e^-M + e^(u_a - alpha x -
    M) + e^(u_b - beta y - M)``, ``Q' = bonus e^(u_f + r_f x - M)`` and ``M``
    the largest exponent of ``P/e`` over all rows of the call, one number
    (``alpha, beta > 0``: at the smallest ``x`` and ``y``; 0 at least): three
    ``exp`` and one ``log`` per row, the cost of the whole-curve model's
    gradient. (Scaling each row by its own largest term took four ``exp``
    and a quarter more time, same values to rounding.) No overflow for any
    parameters; a row underflows only if its terms lie more than ``e^700``
    below the largest term of another row of the same call.
    """
    ln_e = _shares(theta["u_a"], theta["u_b"])[0]
    alpha = jnp.exp(theta["log_alpha"])
    beta = jnp.exp(theta["log_beta"])
    d_a = theta["u_a"] - alpha * x
    d_b = theta["u_b"] - beta * y_data
    big = jnp.maximum(jnp.maximum(jnp.max(d_a), jnp.max(d_b)), 0.0)
    big = jax.lax.stop_gradient(big)  # any shift gives the same value; keep it out of the gradient
    p = jnp.exp(-big) + jnp.exp(d_a - big) + jnp.exp(d_b - big)
    q = bonus * jnp.exp(theta["u_f"] + theta["r_f"] * x - big)
    return theta["log_scale"] + ln_e + big + jnp.log(jnp.maximum(p - q, (1.0 - _MAX_BONUS) * p))


def _log_loss_annealed_factored(factors, bonus, theta):
    """:func:`_log_loss_annealed` with the size and data terms per distinct value.

    ``factors`` (:func:`hiscale.modeling.curve.curve_factors`) gives the
    distinct ``x`` and ``y`` and each row's index: the three ``exp`` are taken
    on the distinct values (a family has few sizes and few distinct token
    counts) and gathered, leaving one ``log`` per row. The distinct values
    are the rows' own (padded with copies), so ``big`` and every row's value
    are the same numbers as :func:`_log_loss_annealed`'s; only the gradient
    sums in another order.
    """
    x_u, x_i = jnp.asarray(factors["x_u"]), jnp.asarray(factors["x_i"])
    y_u, y_i = jnp.asarray(factors["y_u"]), jnp.asarray(factors["y_i"])
    ln_e = _shares(theta["u_a"], theta["u_b"])[0]
    alpha = jnp.exp(theta["log_alpha"])
    beta = jnp.exp(theta["log_beta"])
    d_a = theta["u_a"] - alpha * x_u
    d_b = theta["u_b"] - beta * y_u
    big = jnp.maximum(jnp.maximum(jnp.max(d_a), jnp.max(d_b)), 0.0)
    big = jax.lax.stop_gradient(big)
    p = jnp.exp(-big) + jnp.exp(d_a - big)[x_i] + jnp.exp(d_b - big)[y_i]
    q = bonus * jnp.exp(theta["u_f"] + theta["r_f"] * x_u - big)[x_i]
    return theta["log_scale"] + ln_e + big + jnp.log(jnp.maximum(p - q, (1.0 - _MAX_BONUS) * p))


def _log_loss_h_term_factored(factors, theta, covariates):
    """:func:`_log_loss_h_term` from :func:`~hiscale.modeling.curve.curve_factors`."""
    return _log_loss_annealed_factored(factors, 1.0 - jnp.asarray(covariates["lr_mult"]), theta)


def _log_loss_momentum(x, y, theta, covariates):
    """Momentum law: data term in ``S1``, bonus ``anneal = S2/τ``."""
    y1 = jnp.log(jnp.asarray(covariates["s1"]) / D0)
    return _log_loss_annealed(x, y1, jnp.asarray(covariates["anneal"]), theta)


def _log_loss_h_term(x, y, theta, covariates):
    """h-term law: data term in ``D``, bonus ``1 - h``."""
    return _log_loss_annealed(x, y, 1.0 - jnp.asarray(covariates["lr_mult"]), theta)


def _log_loss_h_rel(x, y, theta, covariates):
    """h-rel law: annealing removes ``(1 - h) sigmoid(v_f + r_f x)`` of the reducible loss.

    ``ln L = ln s + ln(e + R (1 - (1 - h) q))``, ``R = a (N/N0)^-alpha + b
    (D/D0)^-beta``, ``q = sigmoid(v_f + r_f x)`` in (0, 1): the loss stays above
    ``s e`` for every size, however ``r_f`` extrapolates.
    """
    ln_e, ln_a, ln_b = _shares(theta["u_a"], theta["u_b"])
    alpha = jnp.exp(theta["log_alpha"])
    beta = jnp.exp(theta["log_beta"])
    ln_r = jnp.logaddexp(ln_a - alpha * x, ln_b - beta * y)
    q = jax.nn.sigmoid(theta["v_f"] + theta["r_f"] * x)
    bonus = (1.0 - jnp.asarray(covariates["lr_mult"])) * q
    return theta["log_scale"] + jnp.logaddexp(ln_e + 0.0 * ln_r, ln_r + jnp.log1p(-bonus))


@dataclass(frozen=True)
class Law:
    """A scaling-law form in the share parameterisation.

    Attributes
    ----------
    name : str
        Registry key.
    params : tuple of str
        Unit-free parameter names pooled across families (``log_scale`` is
        always present in addition and is never pooled).
    log_loss_fn : callable
        ``(x, y, theta) -> ln L`` with ``x = ln(N/N0)``, ``y = ln(D/D0)``;
        ``(x, y, theta, covariates) -> ln L`` when ``covariates`` is not empty.
    description : str
        The formula in words.
    covariates : tuple of str
        Per-row inputs besides ``x, y`` (columns of
        :func:`hiscale.data.schedule.reconstruct`); empty for end-of-run laws.
    log_loss_factored_fn : callable, optional
        ``(factors, theta, covariates) -> ln L``: the same values from the
        distinct sizes and token counts of
        :func:`hiscale.modeling.curve.curve_factors` (cheaper per row).
    """

    name: str
    params: tuple[str, ...]
    log_loss_fn: Callable
    description: str
    covariates: tuple[str, ...] = ()
    log_loss_factored_fn: Callable | None = None

    def _covariates(self, covariates: Mapping | None) -> dict:
        missing = [c for c in self.covariates if covariates is None or c not in covariates]
        if missing:
            raise ValueError(
                f"law {self.name!r} needs the per-row covariates {list(self.covariates)} "
                f"(hiscale.data.schedule.reconstruct); missing {missing}"
            )
        return {c: covariates[c] for c in self.covariates}

    def log_loss(self, x, y, theta: Mapping, covariates: Mapping | None = None):
        """Natural log of the predicted loss at ``x = ln(N/N0)``, ``y = ln(D/D0)``.

        ``covariates`` (a mapping of per-row arrays) is required by curve laws
        and ignored by the others.
        """
        if not self.covariates:
            return self.log_loss_fn(x, y, theta)
        return self.log_loss_fn(x, y, theta, self._covariates(covariates))

    def log_loss_factored(self, x, y, theta: Mapping, covariates=None, factors=None):
        """:meth:`log_loss` of rows given with their :func:`~hiscale.modeling.curve.curve_factors`.

        The same values: laws with a factored form (``h-term``) evaluate their
        size and data terms once per distinct value; the others, or
        ``factors=None``, evaluate :meth:`log_loss` per row.
        """
        if factors is None or self.log_loss_factored_fn is None:
            return self.log_loss(x, y, theta, covariates)
        return self.log_loss_factored_fn(factors, theta, self._covariates(covariates))

    def loss(self, params, tokens, theta: Mapping, covariates: Mapping | None = None):
        """Predicted loss at raw ``params`` (N) and ``tokens`` (D)."""
        x = jnp.log(jnp.asarray(params, dtype=float) / N0)
        y = jnp.log(jnp.asarray(tokens, dtype=float) / D0)
        return jnp.exp(self.log_loss(x, y, theta, covariates))


LAWS: dict[str, Law] = {
    "chinchilla": Law(
        name="chinchilla",
        params=("u_a", "u_b", "log_alpha", "log_beta"),
        log_loss_fn=_log_loss_chinchilla,
        description="L = s (e + a (N/N0)^-alpha + b (D/D0)^-beta), e + a + b = 1",
    ),
    "chinchilla-nd": Law(
        name="chinchilla-nd",
        params=("u_a", "u_b", "log_alpha", "log_beta", "gamma"),
        log_loss_fn=_log_loss_chinchilla_nd,
        description=("L = s (e + a (N/N0)^-alpha + b (D/D0)^-beta (N/N0)^gamma), e + a + b = 1"),
    ),
}


#: Laws of whole training curves under a learning-rate schedule (need covariates).
#: Kept apart from :data:`LAWS` until the fit supplies covariates.
CURVE_LAWS: dict[str, Law] = {
    "momentum": Law(
        name="momentum",
        params=("u_a", "u_b", "log_alpha", "log_beta", "u_f", "r_f"),
        log_loss_fn=_log_loss_momentum,
        description=(
            "L = s (e + a (N/N0)^-alpha + b (S1/D0)^-beta - f (S2/tau) (N/N0)^r_f), "
            "e + a + b = 1, f = e exp(u_f)"
        ),
        covariates=("s1", "anneal"),
    ),
    "h-term": Law(
        name="h-term",
        params=("u_a", "u_b", "log_alpha", "log_beta", "u_f", "r_f"),
        log_loss_fn=_log_loss_h_term,
        description=(
            "L = s (e + a (N/N0)^-alpha + b (D/D0)^-beta - f (1 - h) (N/N0)^r_f), "
            "e + a + b = 1, f = e exp(u_f)"
        ),
        covariates=("lr_mult",),
        log_loss_factored_fn=_log_loss_h_term_factored,
    ),
    "h-rel": Law(
        name="h-rel",
        params=("u_a", "u_b", "log_alpha", "log_beta", "v_f", "r_f"),
        log_loss_fn=_log_loss_h_rel,
        description=(
            "L = s (e + (a (N/N0)^-alpha + b (D/D0)^-beta) (1 - (1 - h) q)), "
            "e + a + b = 1, q = sigmoid(v_f + r_f ln(N/N0))"
        ),
        covariates=("lr_mult",),
    ),
}


def get_law(law: str | Law) -> Law:
    """Look a law up by name in :data:`LAWS` or :data:`CURVE_LAWS` (or pass a Law through)."""
    if isinstance(law, Law):
        return law
    if law in LAWS:
        return LAWS[law]
    if law in CURVE_LAWS:
        return CURVE_LAWS[law]
    raise ValueError(
        f"unknown law {law!r}; known: {', '.join(LAWS)}; "
        f"curve laws (need schedule covariates): {', '.join(CURVE_LAWS)}"
    )


def share_to_paper(theta: Mapping) -> dict[str, np.ndarray]:
    """Convert separable share parameters to the paper's ``(a, b, e, alpha, beta)``.

    ``exp(a) N^-alpha = s a_share (N/N0)^-alpha`` gives ``a = ln s + ln a_share
    + alpha ln N0``; likewise for ``b`` with ``D0``; ``e = ln s + ln e_share``.
    """
    ln_e, ln_a, ln_b = (np.asarray(v) for v in _shares(theta["u_a"], theta["u_b"]))
    alpha = np.exp(np.asarray(theta["log_alpha"]))
    beta = np.exp(np.asarray(theta["log_beta"]))
    ls = np.asarray(theta["log_scale"])
    return {
        "a": ls + ln_a + alpha * np.log(N0),
        "b": ls + ln_b + beta * np.log(D0),
        "e": ls + ln_e,
        "alpha": alpha,
        "beta": beta,
    }
