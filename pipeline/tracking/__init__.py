"""MLflow: the run logger used by rank 0, and the model registry (register, alias)."""
