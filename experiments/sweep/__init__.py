"""The sweep layer: Hydra schema and validation (``jobs``), job adapters for the local backend, verl and studies
(``verl_jobs``, ``study_jobs``), run names (``naming``) and Slurm helpers (``slurm``). Entry point: ``sweep.py``."""
