"""Budget planning: which runs to train next (``hiscale.plan``).

``candidates`` (candidate runs and their FLOPs), ``preposterior`` (expected
target interval after a run, by importance reweighting), ``greedy`` (a
sequence under a budget) and ``planner`` (:func:`plan`, :class:`Plan`).
"""

from hiscale.planning.planner import Plan, plan

__all__ = ["Plan", "plan"]
