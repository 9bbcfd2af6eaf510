"""MLOps loop."""
