"""Runnable jobs of ead-harness, one package each: ``local`` (the CPU backend), ``verl`` (the GPU backend),
``studies`` (entropy, branching, schedule, inference scaling), ``sweep`` (Hydra schema, job adapters) and
``tracking`` (hashes, loggers, MLflow run lifecycle). Imports point one way: tracking <- local <- verl, studies <-
sweep."""
