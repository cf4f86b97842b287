"""Hydra sweeper plugin of ead-harness: validate and deduplicate every job of a multirun before launching any."""
