"""Backtests with the paper's protocol: cells, methods, the runner, the paper's estimator."""
