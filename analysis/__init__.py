"""Analysis of sweeps: MLflow runs as tidy pandas frames (``mlflow_loader``) and figures (``training_curves``)."""
