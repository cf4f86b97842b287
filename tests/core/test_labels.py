"""One spelling per sampling condition: ``ead_core.condition_label``, and every place that names a condition (run
names, analysis tables and figures, inference-scaling labels, labels written by older versions) agrees with it."""

from __future__ import annotations

import pandas as pd
import pytest

from ead_core import condition_label
from ead_core.schedule import tau_text


@pytest.mark.parametrize(("tau", "text"), [(1, "1.0"), (1.0, "1.0"), (0.6, "0.6"), (1.25, "1.25"), (2, "2.0")])
def test_tau_text(tau, text):
    assert tau_text(tau) == text


def test_condition_label():
    assert condition_label("ead") == "EAD"
    assert condition_label("ead", detail="paper step:200") == "EAD paper step:200"
    assert condition_label("fixed", 1) == "fixed 1.0"
    assert condition_label("fixed", 0.6) == "fixed 0.6"
    assert condition_label("reverse") == "reverse"
    with pytest.raises(ValueError, match="tau must be given"):
        condition_label("fixed")


@pytest.mark.parametrize(("kind", "tau"), [("ead", 1.0), ("fixed", 0.6), ("fixed", 1.0), ("fixed", 1.2)])
def test_every_place_spells_a_condition_alike(kind, tau):
    from analysis.mlflow_loader import condition_labels
    from analysis.style import canonical_condition
    from experiments.local.config import SamplingConfig
    from experiments.studies.inference import parse_condition
    from experiments.sweep.naming import sampling_label

    expected = condition_label(kind, tau)
    sampling = SamplingConfig(kind=kind, tau=tau)
    assert sampling_label(sampling) == expected  # run names
    runs = pd.DataFrame({"sampling.kind": [kind], "sampling.tau": [str(tau)]})
    assert condition_labels(runs).iloc[0] == expected  # analysis, from MLflow params (text)
    spec = "ead:local" if kind == "ead" else f"fixed:{tau}"
    assert parse_condition(spec).label == expected  # inference-scaling study
    legacy = "ead_local" if kind == "ead" else f"fixed_{tau}"
    assert canonical_condition(legacy) == canonical_condition(expected) == expected  # older stores
