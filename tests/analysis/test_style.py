"""The look: canonical condition names, fixed colours, ordering, sizes, PNG + PDF files."""

from __future__ import annotations

from pathlib import Path

import pytest

from analysis.style import (
    FALLBACK_COLORS,
    FIXED_COLORS,
    WIDTHS,
    canonical_condition,
    condition_colors,
    condition_order,
    legend_below,
    new_figure,
    save,
    theme,
)


@pytest.mark.parametrize(
    ("raw", "canonical"),
    [
        ("fixed_1", "fixed 1.0"),
        ("fixed:0.6", "fixed 0.6"),
        ("fixed 1.2", "fixed 1.2"),
        ("fixed_1.0", "fixed 1.0"),
        ("ead", "EAD"),
        ("ead_local", "EAD"),
        ("ead_paper_s200", "EAD paper_s200"),
        ("EAD d_growth=0.5", "EAD d_growth=0.5"),
        ("reverse", "reverse"),
    ],
)
def test_canonical_condition(raw: str, canonical: str) -> None:
    assert canonical_condition(raw) == canonical


def test_the_paper_conditions_keep_their_colours_and_others_are_deterministic() -> None:
    few = condition_colors(["EAD", "fixed 1.0"])
    many = condition_colors(["fixed 1.2", "EAD", "fixed 0.6", "fixed 1.0", "EAD d0=4", "reverse"])
    assert few["EAD"] == many["EAD"] == FIXED_COLORS["EAD"]
    assert few["fixed 1.0"] == many["fixed 1.0"] == FIXED_COLORS["fixed 1.0"]
    assert len(set(FIXED_COLORS.values())) == 4
    assert many["EAD d0=4"] in FALLBACK_COLORS and many["reverse"] in FALLBACK_COLORS
    assert many["EAD d0=4"] != many["reverse"]
    assert condition_colors(["EAD d0=4"])["EAD d0=4"] == condition_colors(["EAD d0=4", "fixed 0.6"])["EAD d0=4"]
    assert not set(FALLBACK_COLORS) & set(FIXED_COLORS.values())


def test_condition_order() -> None:
    got = condition_order(["fixed 1.2", "EAD d0=16", "reverse", "EAD", "fixed 0.6", "EAD d0=4", "fixed 1.0"])
    assert got == ["EAD", "EAD d0=4", "EAD d0=16", "fixed 0.6", "fixed 1.0", "fixed 1.2", "reverse"]


def test_sizes_legend_and_save(tmp_path: Path) -> None:
    with theme():
        fig, axes = new_figure(2, 3, width="single")
        (line,) = axes[0][0].plot([0, 1], [0, 1], label="EAD")
        legend_below(fig, [line], ["EAD"])
    assert fig.get_figwidth() == WIDTHS["single"] == 3.5 and axes.shape == (2, 3)
    assert new_figure(1, 1, width="double")[0].get_figwidth() == 7.0
    with pytest.raises(ValueError, match="width must be one of"):
        new_figure(1, 1, width="poster")
    paths = save(fig, tmp_path / "out", "demo")
    assert [p.name for p in paths] == ["demo.png", "demo.pdf"]
    assert paths[0].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and paths[1].read_bytes()[:5] == b"%PDF-"
