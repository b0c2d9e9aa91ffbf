"""Research code outside the main flow (nothing in hiscale imports it)."""
