"""NumPyro models: curves -> design arrays, the family model, simulation from it."""
