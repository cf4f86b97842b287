"""Shared test set-up: the skip policy (tests/skip_policy.py: under scripts/test.sh and CI a skip whose reason is not
"needs a CUDA GPU" / "needs a GPU" fails the run), a private warm-start cache and a small warm-started policy."""

from __future__ import annotations

import os

import pytest

pytest_plugins = ["tests.skip_policy", "tests.fixtures.services", "tests.fixtures.analysis_store"]


@pytest.fixture(scope="session")
def ead_cache(tmp_path_factory) -> str:
    """A per-session cache directory (EAD_CACHE) so tests never reuse a user's warm starts. Under pytest-xdist the
    workers of one run share it (the warm start's file lock makes the first worker train and the others wait)."""
    if os.environ.get("PYTEST_XDIST_WORKER"):
        shared = tmp_path_factory.getbasetemp().parent / "ead-cache"  # the run's base directory, above each worker's
        shared.mkdir(exist_ok=True)
        path = str(shared)
    else:
        path = str(tmp_path_factory.mktemp("ead-cache"))
    os.environ["EAD_CACHE"] = path
    return path


# Tests that share one machine-wide service or one expensive session fixture run in the same pytest-xdist worker
# (``--dist loadgroup``, scripts/test.sh): one local Slurm cluster, one analysis store per run.
XDIST_GROUPS = {"slurm_cluster": "slurm", "slurm_executor": "slurm", "analysis_store": "analysis", "store": "analysis"}


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        groups = {XDIST_GROUPS[f] for f in getattr(item, "fixturenames", ()) if f in XDIST_GROUPS}
        if len(groups) > 1:
            raise pytest.UsageError(f"{item.nodeid} needs fixtures of two xdist groups: {sorted(groups)}")
        if groups:
            item.add_marker(pytest.mark.xdist_group(groups.pop()))


# An easy countdown variant: short SFT already gives well-formed answers that are right some of the
# time, so a few RL steps see groups with mixed rewards (a real learning signal).
EASY_COUNTDOWN = {"max_number": 5, "max_target": 12}


@pytest.fixture(scope="session")
def tiny_policy_dir(ead_cache) -> str:
    """A briefly warm-started tiny policy on the easy countdown variant (real SFT, 120 steps of 32)."""
    from experiments.local.warmstart import WarmStartConfig, warm_start  # imports torch: only when needed

    cfg = WarmStartConfig(task_knobs=EASY_COUNTDOWN, steps=120, batch_size=32, size="tiny", n_train=4000)
    return str(warm_start(cfg, cache_dir=ead_cache, progress=False))
