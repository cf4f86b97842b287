"""Study jobs: entropy by position, position branching and the effective schedule.

``python sweep.py study={entropy,branching,schedule} [study.<option>=value ...]`` (experiments.sweep.study_jobs);
each logs through a RunLogger.
"""

from experiments.studies.branching import BranchingStudyConfig
from experiments.studies.entropy import EntropyStudyConfig
from experiments.studies.schedule import ScheduleStudyConfig

STUDIES = {"entropy": EntropyStudyConfig, "branching": BranchingStudyConfig, "schedule": ScheduleStudyConfig}


def run_study(name: str, cfg, logger):
    """Run the study ``name`` with its config object."""
    from experiments.studies import branching, entropy, schedule

    modules = {"entropy": entropy, "branching": branching, "schedule": schedule}
    if name not in modules:
        raise ValueError(f"study must be one of {sorted(modules)}, got {name!r}")
    return modules[name].run(cfg, logger)


__all__ = ["STUDIES", "BranchingStudyConfig", "EntropyStudyConfig", "ScheduleStudyConfig", "run_study"]
