"""Local RLVR backend: ``run(RLVRConfig(...))`` or ``python -m experiments.rlvr``."""

from experiments.rlvr.config import ALGORITHMS, AlgorithmConfig, RLVRConfig, SamplingConfig, TISConfig, from_dict
from experiments.rlvr.train import Trainer, flat_params, run

__all__ = [
    "ALGORITHMS",
    "AlgorithmConfig",
    "RLVRConfig",
    "SamplingConfig",
    "TISConfig",
    "Trainer",
    "flat_params",
    "from_dict",
    "run",
]
