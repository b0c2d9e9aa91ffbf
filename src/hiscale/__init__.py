"""hiscale: hierarchical Bayesian scaling laws."""
