"""The data layer: the curves table (schema, validation, loading)."""
