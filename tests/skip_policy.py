"""Skip policy: a test that cannot run where it should is a failure, not a skip.

Active under ``scripts/test.sh`` (it sets ``EAD_STRICT_SKIPS=1``) and in CI (``CI=true``); off in a plain ``pytest``
run, where skips show as usual (``-ra``). When active, every skipped test or module (``pytest.skip``,
``pytest.importorskip``, ``skipif``) and every xfail whose reason does not start with one of ``ALLOWED_SKIP_REASONS``
is listed at the end of the run with its node id and reason, and the run exits 1 even if everything else passed.

The allowed reasons say only that this machine lacks hardware the test needs. Anything a script can install
(a Python package, a Debian package such as shellcheck, a service) is installed by ``scripts/install.sh`` instead of
skipped. A test that needs a GPU skips with a reason that starts with one of these texts, for example::

    @pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU (vLLM on GPU)")
"""

from __future__ import annotations

import os

import pytest

ALLOWED_SKIP_REASONS = (
    "needs a CUDA GPU",  # torch.cuda.is_available() is False: the CPU machines of developers and CI
    "needs a GPU",  # any other accelerator the test cannot run without
    # Not hardware, but the same kind of absence: the vLLM of verl 0.9.1's recipe (0.24, .venv-recipe) has no
    # Model Runner V2 logits-processor interface to test (tests/vllm/conftest.py: NO_MRV2_REASON).
    "vLLM has no Model Runner V2 logits-processor interface",
)
STRICT_ENV = "EAD_STRICT_SKIPS"


def strict() -> bool:
    """Whether disallowed skips fail the run: ``EAD_STRICT_SKIPS=1`` (scripts/test.sh) or ``CI=true``."""
    return os.environ.get(STRICT_ENV, "") == "1" or os.environ.get("CI", "").lower() == "true"


def allowed(reason: str) -> bool:
    """A skip reason on the list (environment-only: no GPU on this machine)."""
    return reason.startswith(ALLOWED_SKIP_REASONS)


def skip_reason(report: pytest.TestReport | pytest.CollectReport) -> str:
    """The reason text of a skipped (or xfailed) report, without pytest's 'Skipped: ' prefix."""
    if hasattr(report, "wasxfail"):
        return f"xfail: {report.wasxfail}".rstrip(": ")
    longrepr = report.longrepr
    reason = longrepr[2] if isinstance(longrepr, tuple) and len(longrepr) == 3 else str(longrepr)
    return reason.removeprefix("Skipped: ")


class SkipPolicy:
    """Collects the skips of the run and fails the session on those whose reason is not allowed."""

    def __init__(self) -> None:
        self.refused: list[tuple[str, str]] = []

    def _record(self, report: pytest.TestReport | pytest.CollectReport) -> None:
        if report.skipped:
            reason = skip_reason(report)
            if not allowed(reason):
                self.refused.append((report.nodeid or str(report.fspath), reason))

    def pytest_collectreport(self, report: pytest.CollectReport) -> None:
        self._record(report)

    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        self._record(report)

    @pytest.hookimpl(trylast=True)
    def pytest_sessionfinish(self, session: pytest.Session, exitstatus: int) -> None:
        if self.refused and session.exitstatus in (pytest.ExitCode.OK, pytest.ExitCode.NO_TESTS_COLLECTED):
            session.exitstatus = pytest.ExitCode.TESTS_FAILED

    def pytest_terminal_summary(self, terminalreporter: pytest.TerminalReporter) -> None:
        if not self.refused:
            return
        tr = terminalreporter
        tr.write_sep("=", f"{len(self.refused)} skip(s) not allowed ({STRICT_ENV}=1 or CI=true)", red=True, bold=True)
        for nodeid, reason in self.refused:
            tr.write_line(f"SKIP NOT ALLOWED {nodeid}: {reason}")
        tr.write_line(f"allowed reasons start with: {', '.join(repr(r) for r in ALLOWED_SKIP_REASONS)}")
        tr.write_line("install what the test needs (scripts/install.sh) or make it fail instead of skipping")


def pytest_configure(config: pytest.Config) -> None:
    if strict():
        config.pluginmanager.register(SkipPolicy(), "ead-skip-policy")
