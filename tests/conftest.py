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


# pytest-xdist units of work (scripts/test.sh runs two workers): a test module goes to one worker whole, so its
# module-scoped fixtures (a sweep, a server) are set up once, and the modules that share one machine-wide service or
# one expensive session fixture go to one worker together: the local Slurm cluster, the analysis store. (xdist's own
# ``--dist loadgroup`` marks do not work with pytest 9.2, which no longer reads the node id xdist rewrites.)
SHARED_UNITS = {
    "tests/sweep/test_slurm.py": "slurm",
    "tests/sweep/test_slurm_cluster.py": "slurm",
    "tests/sweep/test_slurm_helpers.py": "slurm",
    "tests/sweep/test_launcher_profiles.py": "slurm",
    "tests/analysis/": "analysis",
    "tests/notebooks/": "analysis",
}
UNIT_FIXTURES = {"slurm_cluster": "slurm", "slurm_executor": "slurm", "analysis_store": "analysis"}


def xdist_unit(nodeid: str) -> str:
    """The unit of work a test belongs to: its shared unit (SHARED_UNITS) or its module."""
    module = nodeid.split("::", 1)[0]
    return next((unit for prefix, unit in SHARED_UNITS.items() if module.startswith(prefix)), module)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """A test on a shared service outside that service's unit would run next to the unit in another worker: refuse."""
    for item in items:
        for fixture in set(getattr(item, "fixturenames", ())) & set(UNIT_FIXTURES):
            if xdist_unit(item.nodeid) != UNIT_FIXTURES[fixture]:
                raise pytest.UsageError(
                    f"{item.nodeid} uses {fixture}: add its module to SHARED_UNITS[...] = {UNIT_FIXTURES[fixture]!r} "
                    "in tests/conftest.py"
                )


@pytest.hookimpl(optionalhook=True)  # the vLLM environment has no pytest-xdist
def pytest_xdist_make_scheduler(config: pytest.Config, log: object) -> object:
    from xdist.scheduler import LoadScopeScheduling

    class UnitScheduling(LoadScopeScheduling):
        def _split_scope(self, nodeid: str) -> str:
            return xdist_unit(nodeid)

    return UnitScheduling(config, log)


# An easy countdown variant: short SFT already gives well-formed answers that are right some of the
# time, so a few RL steps see groups with mixed rewards (a real learning signal).
EASY_COUNTDOWN = {"max_number": 5, "max_target": 12}


@pytest.fixture(scope="session")
def tiny_policy_dir(ead_cache) -> str:
    """A briefly warm-started tiny policy on the easy countdown variant (real SFT, 120 steps of 32)."""
    from experiments.local.warmstart import WarmStartConfig, warm_start  # imports torch: only when needed

    cfg = WarmStartConfig(task_knobs=EASY_COUNTDOWN, steps=120, batch_size=32, size="tiny", n_train=4000)
    return str(warm_start(cfg, cache_dir=ead_cache, progress=False))
