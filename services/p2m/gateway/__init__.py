"""The gateway: the public API; it owns runs and drives every stage."""
