"""Inference-time scaling study (the paper's Fig. 9) on vLLM: Maj@N, Pass@N and Worst@N against N.

One vLLM engine with ``EADLogitsProcessor`` samples, for every condition (EAD schedules at a chosen global
step, fixed temperatures), ``max(n_grid)`` responses per eval prompt in ONE ``generate`` call (``n`` parallel
samples per request, ``top_p=1``, ``top_k`` off; EAD and fixed temperatures both through the processor's
``extra_args``, so the baseline takes the same code path). The responses are verified, and for each N:

* ``maj_at_n``: majority-vote accuracy, by bootstrap WITHOUT replacement of N of the samples
  (``majority_at_k_bootstrap``), exactly (``majority_at_n`` over all samples) when N is the sample count;
* ``pass_at_n`` / ``worst_at_n``: the unbiased estimators from all samples; ``mean_at_n``: mean accuracy.

A vote needs a key that decides correctness: the task's final answer (arithmetic) or, for countdown, whose
extracted answer is the claimed value (almost always the target, right or wrong), the solution text; see
``vote`` and the ``vote_ambiguity`` statistic, which flags a key that does not decide correctness.

Metrics are logged through a ``RunLogger`` with step = N as ``infer/<label>/<metric>``; tables:
``infer_scaling`` (condition, N, maj, pass, worst, mean, maj_se), ``infer_conditions`` (per condition:
schedule, accuracy, vote diversity and ambiguity, behaviour NLL per token, response length, truncation,
timing) and ``infer_samples`` (per condition and prompt: vote keys and correctness, to recompute anything).

The same per-prompt seeds are used in every condition (common random numbers: vLLM draws the same noise
at each position, so differences between conditions come from the schedules rather than from the draw).

Conditions are compact strings (or dicts, see ``parse_condition``)::

    fixed:0.6                      fixed temperature 0.6                          label 'fixed 0.6'
    ead:local                      the local RLVR default schedule (SamplingConfig())  label 'EAD'
    ead:paper@200                  EADSchedule.preset("paper") at global step 200  label 'EAD paper step:200'
    ead:reference,tau_min=0.8      preset "reference" with an override             label 'EAD reference tau_min:0.8'
    mine=ead:local,d0=4@50         an explicit label

    python -m experiments.studies.inference --help

Modules: ``config`` (the study and engine settings), ``conditions`` (parsing and labels), ``engine`` (vLLM
sampling), ``scoring`` (votes and metrics against N), ``job`` (``run``), ``__main__`` (command line, MLflow).

This package imports neither vLLM nor verl, Hydra or MLflow at import time (vLLM only inside ``run``), so it
loads in both environments; running the study needs ``.venv-vllm``.
"""

from experiments.studies.inference.conditions import Condition, parse_condition
from experiments.studies.inference.config import BACKEND, MAX_N, PREFIX, EngineConfig, InferenceScalingConfig
from experiments.studies.inference.job import run
from experiments.studies.inference.scoring import scaling_metrics

__all__ = [
    "BACKEND",
    "MAX_N",
    "PREFIX",
    "Condition",
    "EngineConfig",
    "InferenceScalingConfig",
    "parse_condition",
    "run",
    "scaling_metrics",
]
