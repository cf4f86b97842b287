"""Temporary alias: the argparse helpers moved to experiments.studies.inference.cli (to be removed)."""

from experiments.studies.inference.cli import add_dataclass_options, collect  # noqa: F401
