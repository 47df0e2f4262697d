"""A job's result folder: reading it, its status file, plots and MLflow tracking."""
