"""Tests of the sweep infrastructure against real services: the local Slurm cluster, submitit, an MLflow server."""
