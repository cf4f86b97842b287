"""The skip policy (tests/skip_policy.py) on a real pytest run in a subprocess: a disallowed skip fails the run and is
named with its reason; GPU-only skips pass; nothing is enforced outside scripts/test.sh and CI."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.skip_policy import ALLOWED_SKIP_REASONS, allowed

ROOT = Path(__file__).resolve().parents[1]

SUITE = """
import pytest

def test_runs():
    assert 1 + 1 == 2

@pytest.mark.skipif(True, reason="{reason}")
def test_skipped():
    pass
"""


def run_suite(tmp_path: Path, reason: str, **env: str) -> subprocess.CompletedProcess[str]:
    (tmp_path / "test_suite.py").write_text(SUITE.format(reason=reason))
    clean = {k: v for k, v in os.environ.items() if k not in ("CI", "EAD_STRICT_SKIPS")}
    return subprocess.run(
        # --rootdir: node ids relative to tmp_path wherever the checkout lies (a clone under /tmp made them spt/...)
        [sys.executable, "-m", "pytest", "-p", "tests.skip_policy", "-p", "no:cacheprovider",
         "--rootdir", str(tmp_path), str(tmp_path)],
        cwd=ROOT, env={**clean, **env}, capture_output=True, text=True, timeout=120,
    )  # fmt: skip


@pytest.mark.parametrize("env", [{"CI": "true"}, {"EAD_STRICT_SKIPS": "1"}])
def test_a_disallowed_skip_fails_the_run_and_is_named(tmp_path: Path, env: dict[str, str]) -> None:
    result = run_suite(tmp_path, "shellcheck is not installed", **env)
    assert result.returncode == 1, result.stdout
    assert "SKIP NOT ALLOWED test_suite.py::test_skipped: shellcheck is not installed" in result.stdout
    assert "1 passed, 1 skipped" in result.stdout


def test_gpu_only_skips_are_allowed(tmp_path: Path) -> None:
    result = run_suite(tmp_path, "needs a CUDA GPU (vLLM on GPU)", CI="true")
    assert result.returncode == 0 and "NOT ALLOWED" not in result.stdout, result.stdout


def test_outside_ci_skips_are_reported_not_enforced(tmp_path: Path) -> None:
    result = run_suite(tmp_path, "shellcheck is not installed")
    assert result.returncode == 0 and "NOT ALLOWED" not in result.stdout, result.stdout


def test_a_module_skipped_at_import_fails_too(tmp_path: Path) -> None:
    (tmp_path / "test_mod.py").write_text('import pytest\npytest.importorskip("no_such_module_xyz")\n')
    result = run_suite(tmp_path, "needs a GPU", CI="true")
    assert result.returncode == 1, result.stdout
    assert "SKIP NOT ALLOWED test_mod.py: could not import 'no_such_module_xyz'" in result.stdout


def test_the_allowed_list_is_hardware_only() -> None:
    assert all(allowed(r + ": detail") for r in ALLOWED_SKIP_REASONS)
    assert allowed("needs a CUDA GPU: vLLM GPU build") and not allowed("verl is not installed here")
