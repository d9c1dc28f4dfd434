"""Experiment trackers beyond the run directory (MLflow)."""
