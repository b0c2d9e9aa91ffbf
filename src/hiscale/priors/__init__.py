"""Priors as data: defaults, the Prior class, population priors on disk, model cards."""
