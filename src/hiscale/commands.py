"""Extra CLI commands (predict, fit, prior, simulate, demo) register here."""
