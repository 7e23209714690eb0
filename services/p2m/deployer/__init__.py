"""The deployer: serves student models with KServe (locally: a ModelServer process per name)."""
