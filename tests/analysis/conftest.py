"""The analysis tests share the session's MLflow store (tests/fixtures/analysis_store.py) with the notebook tests."""

from __future__ import annotations

from typing import Any

import pytest


@pytest.fixture(scope="session")
def store(analysis_store: dict[str, Any]) -> dict[str, Any]:
    """{'uri', 'root', 'experiment', 'studies': {name: run_id}, 'inference', 'unfinished': {status: run_id}}."""
    return analysis_store
