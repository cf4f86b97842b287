"""The look of every figure: one seaborn theme, a fixed colour per condition, paper column widths, legends outside the
data, and ``save`` (PNG + PDF).

Figures are built as ``matplotlib.figure.Figure`` objects (no pyplot state: nothing to close, no GUI backend needed)
inside ``theme()``, which applies the seaborn theme to the figure being built without touching global rcParams.

Colours come from seaborn's colour-blind-safe palette (Okabe-Ito based). The paper's conditions always get the same
colour, in every figure: EAD blue, fixed 0.6 green, fixed 1.0 orange, fixed 1.2 vermillion. Any other condition (an
EAD variant, a reverse schedule, an unusual temperature) gets a colour from the rest of the palette chosen by a hash of
its name, so it too keeps its colour from figure to figure (colliding names in one figure are moved along, in sorted
order).
"""

from __future__ import annotations

import contextlib
import re
import zlib
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

import matplotlib as mpl
import seaborn as sns
from matplotlib.figure import Figure

from ead_core.schedule import condition_label

# Paper sizes in inches.
WIDTHS = {"single": 3.5, "double": 7.0}
ROW_HEIGHT = {"single": 2.2, "double": 2.0}

_CB = sns.color_palette("colorblind").as_hex()
FIXED_COLORS: dict[str, str] = {
    "EAD": _CB[0],  # blue
    "fixed 0.6": _CB[2],  # green
    "fixed 1.0": _CB[1],  # orange
    "fixed 1.2": _CB[3],  # vermillion
}
# The rest of the palette, the low-contrast yellow last.
FALLBACK_COLORS: list[str] = [_CB[4], _CB[5], _CB[7], _CB[9], _CB[6], _CB[8]]
MARKERS = ["o", "s", "^", "D", "v", "P", "X"]


def theme_rc() -> dict[str, Any]:
    """rcParams of the one theme: seaborn "whitegrid" at "paper" scale, colour-blind colour cycle."""
    rc: dict[str, Any] = {}
    rc.update(sns.axes_style("whitegrid"))
    rc.update(sns.plotting_context("paper", font_scale=0.95))
    rc.update(
        {
            "axes.prop_cycle": mpl.cycler(color=_CB),
            "axes.titlesize": 8.5,
            "axes.labelsize": 8,
            "legend.fontsize": 7.5,
            "legend.title_fontsize": 7.5,
            "legend.frameon": False,
            "lines.linewidth": 1.4,
            "lines.markersize": 3.5,
            "savefig.dpi": 200,
        }
    )
    return rc


@contextlib.contextmanager
def theme() -> Iterator[None]:
    """Build (and save) figures inside this: the theme applies without changing the caller's rcParams."""
    with mpl.rc_context(theme_rc()):
        yield


def new_figure(nrows: int, ncols: int, width: str = "double", row_height: float | None = None, **kw: Any) -> Any:
    """(Figure, 2-D array of Axes) at a paper column width ('single' 3.5 in, 'double' 7 in), constrained layout."""
    if width not in WIDTHS:
        raise ValueError(f"width must be one of {sorted(WIDTHS)}, got {width!r}")
    h = row_height if row_height is not None else ROW_HEIGHT[width]
    fig = Figure(figsize=(WIDTHS[width], h * nrows + 0.5), layout="constrained")
    axes = fig.subplots(nrows, ncols, squeeze=False, **kw)
    return fig, axes


def canonical_condition(label: str) -> str:
    """One spelling per condition (``ead_core.condition_label``), also for labels written by older versions:
    'fixed_1' / 'fixed:1.0' / 'fixed1.0' / 'fixed 1' -> 'fixed 1.0'; 'ead' -> 'EAD'; inference-scaling labels
    'ead_paper_s200' -> 'EAD paper_s200' and 'ead_local' (the training default schedule) -> 'EAD'. Labels already in
    that spelling pass through unchanged."""
    text = str(label).strip()
    m = re.fullmatch(r"fixed[ _:]?([0-9]*\.?[0-9]+)", text, flags=re.IGNORECASE)
    if m:
        return condition_label("fixed", float(m[1]))
    if text.lower() in ("ead", "ead_local"):  # inference scaling's ead:local is the training default EAD
        return condition_label("ead")
    m = re.fullmatch(r"ead[_:](.+)", text)
    return condition_label("ead", detail=m[1]) if m else text


def condition_order(conditions: Iterable[str]) -> list[str]:
    """EAD first (the plain one, then variants), then fixed temperatures from cold to hot, then anything else."""

    def natural(c: str) -> tuple[Any, ...]:  # 'EAD d0=4' before 'EAD d0=16'
        return tuple(float(p) if p[:1].isdigit() else p for p in re.findall(r"\d+(?:\.\d+)?|\D+", c))

    def key(c: str) -> tuple[int, tuple[Any, ...]]:
        group = 0 if c == "EAD" else 1 if c.startswith("EAD") else 2 if c.startswith("fixed ") else 3
        return (group, tuple((isinstance(p, str), p) for p in natural(c)))

    return sorted(set(conditions), key=key)


def condition_colors(conditions: Iterable[str]) -> dict[str, str]:
    """A colour per condition: the fixed ones for the paper's four, a name-hashed fallback for others."""
    out: dict[str, str] = {}
    taken = set()
    others = []
    for c in sorted(set(conditions)):
        if c in FIXED_COLORS:
            out[c] = FIXED_COLORS[c]
        else:
            others.append(c)
    for c in others:
        i = zlib.crc32(c.encode()) % len(FALLBACK_COLORS)
        for j in range(len(FALLBACK_COLORS)):  # move along on a collision (deterministic: sorted order)
            colour = FALLBACK_COLORS[(i + j) % len(FALLBACK_COLORS)]
            if colour not in taken:
                break
        taken.add(colour)
        out[c] = colour
    return out


def sequential_colors(values: Sequence[Any]) -> dict[Any, tuple[float, float, float]]:
    """Colours for an ordered quantity (rollouts per prompt, a decay length): viridis, readable without colour."""
    ordered = sorted(set(values), key=lambda v: (str(type(v)), v))
    cols = sns.color_palette("viridis", max(len(ordered), 2))
    if len(ordered) == 1:
        cols = cols[:1]
    return dict(zip(ordered, cols))


def legend_below(fig: Figure, handles: Sequence[Any], labels: Sequence[str], title: str | None = None) -> Any:
    """One legend for the figure, below the axes (never over the data)."""
    # As many columns as fit the figure's width (about 10 legend characters per inch, a handle is ~4): long labels
    # wrap into more rows instead of running off the figure.
    longest = max((len(str(label)) for label in labels), default=1) + 4
    ncol = max(1, min(len(labels), int(fig.get_figwidth() * 10 // longest)))
    return fig.legend(handles, labels, loc="outside lower center", ncol=ncol, title=title)


def save(fig: Figure, out_dir: str | Path, name: str) -> list[Path]:
    """Write ``<out_dir>/<name>.png`` and ``.pdf``; return both paths."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = [out / f"{name}.png", out / f"{name}.pdf"]
    engine = fig.get_layout_engine()
    with theme():
        fig.savefig(paths[0])
        fig.set_layout_engine("none")  # the PDF reuses the layout just computed (it is in inches: dpi-free)
        try:
            fig.savefig(paths[1])
        finally:
            fig.set_layout_engine(engine)
    return paths
