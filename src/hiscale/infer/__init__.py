"""Inference: MAP and NUTS, diagnostics, ``fit`` and its result."""
