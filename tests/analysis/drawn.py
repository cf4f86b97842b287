"""Checks that a figure draws its data: each labelled line at the values computed here from the data (numpy and
scipy.stats, not analysis.stats) and each confidence band spanning the 95% t interval. Shared by the figure tests and
the notebook tests (which check the figures the notebooks made)."""

from __future__ import annotations

import re
from typing import Any

import numpy as np
import pandas as pd
import pytest
from matplotlib.figure import Figure
from scipy import stats

from analysis.stats import METRICS


def expected_curve(
    rows: pd.DataFrame, x: str = "step", value: str = "value", bounds: tuple[float, float] | None = None
) -> pd.DataFrame:
    """Per x: mean over the rows (seeds), n, and the 95% t interval mean -/+ t(0.975, n-1) sd / sqrt(n) (n >= 2), cut
    to ``bounds`` (a rate's [0, 1]) where given."""
    g = rows.dropna(subset=[value]).groupby(x)[value]
    out = pd.DataFrame({"mean": g.mean(), "sd": g.std(ddof=1), "n": g.count()})
    half = stats.t.ppf(0.975, out["n"].where(out["n"] >= 2) - 1) * out["sd"] / np.sqrt(out["n"])
    lo, hi = out["mean"] - half, out["mean"] + half
    return out.assign(lo=lo, hi=hi) if bounds is None else out.assign(lo=lo.clip(*bounds), hi=hi.clip(*bounds))


def single(rows: pd.DataFrame, x: str, value: str) -> pd.DataFrame:
    """One run's curve as drawn: its values by x (missing values included), no band."""
    return pd.DataFrame({"mean": rows.set_index(x)[value], "n": 1}).sort_index()


def band_bounds(band: Any) -> dict[float, tuple[float, float]]:
    """{x: (lowest, highest) y} of a fill_between band's polygon vertices."""
    verts = np.concatenate([path.vertices for path in band.get_paths()])
    return {
        float(x): (verts[verts[:, 0] == x, 1].min(), verts[verts[:, 0] == x, 1].max()) for x in np.unique(verts[:, 0])
    }


def assert_drawn(ax: Any, expected: dict[str, pd.DataFrame]) -> None:
    """The labelled lines of ``ax`` are exactly ``expected``'s labels, each at its label's means, and each line with two
    or more seeds at some x is followed by its band, spanning the t interval at those x (and nowhere else)."""
    lines = [line for line in ax.get_lines() if not line.get_label().startswith("_")]
    assert sorted(line.get_label() for line in lines) == sorted(expected), ax.get_title()
    bands = iter(ax.collections)
    for line in lines:
        exp, where = expected[line.get_label()], f"{ax.get_title()}: {line.get_label()}"
        xy = line.get_xydata()
        np.testing.assert_allclose(xy[:, 0], exp.index.to_numpy(float), err_msg=where)
        np.testing.assert_allclose(xy[:, 1], exp["mean"].to_numpy(float), rtol=1e-6, err_msg=where)
        two = exp[exp["n"] >= 2]
        if two.empty:
            continue
        bounds = band_bounds(next(bands))
        assert sorted(bounds) == pytest.approx(two.index.to_numpy(float)), where
        for x, row in two.iterrows():
            assert bounds[float(x)] == pytest.approx((row["lo"], row["hi"]), rel=1e-6), (where, x)
    assert next(bands, None) is None, f"{ax.get_title()}: a band without its line"


def held(fig: Figure) -> dict[str, str]:
    """The settings a figure holds at one value, as its title says: 'Title (k=v, k=v)'."""
    m = re.search(r"\(([^()]*=[^()]*)\)$", fig.get_suptitle())
    return dict(kv.split("=", 1) for kv in m[1].split(", ")) if m else {}


def rows_of(long: pd.DataFrame, key: str, **where: Any) -> pd.DataFrame:
    """Rows of metric ``key`` whose columns equal ``where`` (compared as text)."""
    rows = long[long["key"] == key]
    for column, value in where.items():
        rows = rows[rows[column].astype(str) == str(value)]
    return rows


# What a label on the smoke store's figures (eval_k = 2) shows: 'Pass@2 (T=1.0)' is eval_t1/pass_at_2; rates (the
# eval/* keys) take values, and so bands, in [0, 1].
KEY_OF_LABEL = {m.label_for(2): m.key_for(2) for m in METRICS.values()}
RATE = (0.0, 1.0)


def bounds_of(label: str) -> tuple[float, float] | None:
    """The range a metric label's band is cut to: [0, 1] for the eval rates, none for the training diagnostics."""
    return RATE if KEY_OF_LABEL[label].startswith("eval") else None


def training_expectation(fig: Figure, ax: Any, long: pd.DataFrame) -> dict[str, pd.DataFrame]:
    """For a training-curve Axes titled '<metric> · <algorithm> · <size>' with lines '<condition>, TIS on|off': each
    label's curve from the runs of that panel, condition and TIS setting, at the values the figure holds."""
    metric, algorithm, size = ax.get_title().split(" · ")
    out = {}
    for line in ax.get_lines():
        condition, tis = line.get_label().split(", ")
        rows = rows_of(long, KEY_OF_LABEL[metric], **{"algorithm.name": algorithm, "size": size,
                       "condition": condition, "tis.enabled": tis == "TIS on"}, **held(fig))  # fmt: skip
        assert rows["run_id"].nunique() >= 1, (ax.get_title(), line.get_label())
        out[line.get_label()] = expected_curve(rows, bounds=bounds_of(metric))
    return out
