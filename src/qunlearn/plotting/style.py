"""The one plotting style: colours per model kind, unlearning method and class label; a new
figure on the Agg canvas; the mean ± std band; and ``save``. No pyplot and no global backend:
each figure is a ``matplotlib.figure.Figure`` with its own Agg canvas, so drawing one changes
no global state (pyplot's figure list, the backend, rcParams)."""

from __future__ import annotations

import io
import os
import sys
import zlib
from collections.abc import Iterable
from pathlib import Path

import matplotlib
import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from qunlearn.atomic import atomic_write_bytes, check_target
from qunlearn.errors import QunlearnError

MODEL_COLORS = {"mlp": "tab:blue", "qnn": "tab:red", "logistic": "tab:green"}  # + the control
METHOD_COLORS = {
    "retrain": "tab:green",
    "finetune": "tab:blue",
    "scrub": "tab:orange",
    "gradient_ascent": "tab:red",
    "scrub_kurmanji": "tab:purple",
    "neggrad_plus": "tab:brown",
    # the methods the field compares (qunlearn.unlearn, variant "benchmark")
    "eu_k": "#1b9e77",
    "cf_k": "#66a61e",
    "random_label": "#e7298a",
    "salun": "#9e0142",
    "l1_sparse": "#d95f02",
    "ssd": "#a6761d",
    "fisher_forgetting": "#e6ab02",
    "newton": "#fb9a99",
    "certified_newton": "#6a3d9a",
}
# the reference ensembles of an evaluation: (legend label, colour)
ENSEMBLE_STYLE = {
    "oracle_half": ("oracle halves", "0.55"),
    "oracle": ("oracles", "tab:gray"),
    "clean_oracle": ("clean oracles", "0.3"),  # retrained on D minus all poison
    "oracle_null": ("oracles (attack null)", "0.55"),
    "teacher": ("no unlearning", "k"),
}
# matplotlib's ten tableau colours, red moved second: two classes are blue and red everywhere
CLASS_CYCLE = (
    *("tab:blue", "tab:red", "tab:green", "tab:orange", "tab:purple"),
    *("tab:brown", "tab:pink", "tab:gray", "tab:olive", "tab:cyan"),
)
CLASS_COLORS = CLASS_CYCLE[:2]  # XXZ label 0 (XY), label 1 (Néel)


def class_colors(n_classes: int) -> tuple[str, ...]:
    """A colour per class, at least two (beyond ten classes the colours repeat)."""
    return tuple(CLASS_CYCLE[i % len(CLASS_CYCLE)] for i in range(max(n_classes, 2)))


# teacher snapshots (curvature figures): (legend label, colour, line style)
TEACHER_STYLE = {
    "clean_teacher": ("before poisoning", "k", "--"),
    "poisoned_teacher": ("after poisoning", "0.45", ":"),
}
BAND_ALPHA = 0.18
DPI = 150
SUFFIXES = (".png", ".pdf", ".svg")  # what ``save`` writes when given a file name
DEFAULT_SUFFIXES = (".png", ".pdf")  # what ``save`` writes when given a stem
FORMATS_ENV = "QUNLEARN_FIGURE_FORMATS"  # overrides DEFAULT_SUFFIXES, e.g. "png" or "png,svg"


def model_color(kind: str) -> str | None:
    """The colour of a model kind ("mlp", "qnn", "qnn_cnot", ...); None (matplotlib's colour
    cycle) for a kind that is neither an MLP nor a QNN."""
    for prefix, color in MODEL_COLORS.items():
        if str(kind).startswith(prefix):
            return color
    return None


OTHER_METHOD_COLORS = ("tab:pink", "tab:olive", "tab:cyan", "tab:gray", "gold", "navy", "teal")
"""Colours of a user's methods (none of the built-ins' colours)."""


def method_color(method: str) -> str:
    """The colour of an unlearning method: a built-in's own, any other method's picked by its
    name (a stable hash), so it has the same colour in every figure and every run."""
    if method in METHOD_COLORS:
        return METHOD_COLORS[method]
    return OTHER_METHOD_COLORS[zlib.crc32(method.encode()) % len(OTHER_METHOD_COLORS)]


def readout_colors(n_shots: int, n_noise: int) -> tuple[list, list]:
    """Colours of a sweep's readouts: blues for the shot counts (ascending: darker = more shots),
    oranges for the circuit-noise models; the exact readout is black."""
    import matplotlib

    blues, oranges = matplotlib.colormaps["Blues"], matplotlib.colormaps["Oranges"]
    return (
        [blues(0.35 + 0.6 * (i + 1) / n_shots) for i in range(n_shots)],
        [oranges(0.4 + 0.55 * (i + 1) / n_noise) for i in range(n_noise)],
    )


def ordered_methods(names: Iterable[str]) -> list[str]:
    """Distinct method names, the known ones in ``METHOD_COLORS`` order, then the rest sorted."""
    order = list(METHOD_COLORS)
    return sorted(
        dict.fromkeys(names), key=lambda m: (order.index(m) if m in order else len(order), m)
    )


class StyledFigure(Figure):
    """A figure that is drawn under its own rcParams (``style``) whenever it is drawn: saved,
    shown in a notebook or laid out. Matplotlib reads some rcParams (tick labels, their locators)
    only at draw time, so a style that held only while the figure was built would be lost when
    it is saved or shown later; the global rcParams are restored after each draw."""

    def __init__(self, *args, style: dict | None = None, **kwargs):
        super().__init__(*args, **kwargs)
        self.style = dict(style or {})

    def draw(self, renderer):
        with matplotlib.rc_context(self.style):
            super().draw(renderer)


def new_figure(
    width: float, height: float, *, layout: str | None = "constrained", style: dict | None = None
) -> Figure:
    """A figure of ``width`` x ``height`` inches on its own Agg canvas (not known to pyplot);
    ``style``: rcParams it is drawn under (see :class:`StyledFigure`; build it under the same
    ``matplotlib.rc_context``)."""
    fig = StyledFigure(figsize=(width, height), layout=layout, style=style)
    FigureCanvasAgg(fig)
    return fig


def interval_bars(value, lo, hi) -> list[list[float]] | None:
    """Error-bar lengths ``[[below], [above]]`` of a point and its interval for matplotlib's
    ``errorbar``; None without an interval. A bootstrap percentile interval can miss its point
    (the resamples are not centred on it): the bar then ends at the point, as matplotlib refuses
    negative lengths."""
    if lo is None or hi is None:
        return None
    return [[max(value - lo, 0.0)], [max(hi - value, 0.0)]]


def finite_curve(by_x: dict) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(x, mean, std) over the finite values at each x of ``by_x`` ({x: [value per run]}): NaN
    or infinite runs (diverged) are left out, an x with none is left out, and one value has no
    spread (std 0, no band). What every mean ± std curve draws: no NaN reaches a figure."""
    points = []
    for x in sorted(by_x):
        v = np.asarray(by_x[x], dtype=np.float64)
        v = v[np.isfinite(v)]
        if v.size:
            points.append((x, v.mean(), v.std()))
    if not points:
        return np.zeros(0), np.zeros(0), np.zeros(0)
    x, mean, std = (np.array(a, dtype=np.float64) for a in zip(*points, strict=True))
    return x, mean, std


def mean_std_band(
    ax,
    x,
    mean,
    std,
    fmt: str = "-",
    *,
    band_alpha: float = BAND_ALPHA,
    band_lw: float | None = 0,
    **line_kw,
):
    """A line of ``mean`` against ``x`` (``fmt`` and ``line_kw`` go to ``ax.plot``) and a band
    ``mean ± std`` in the line's colour (``band_lw=None``: matplotlib's default edge width).
    Returns (line, band)."""
    x, mean, std = (np.asarray(a, dtype=np.float64) for a in (x, mean, std))
    (line,) = ax.plot(x, mean, fmt, **line_kw)
    band = ax.fill_between(
        x, mean - std, mean + std, color=line.get_color(), alpha=band_alpha, lw=band_lw
    )
    return line, band


def figure_file(path: str | os.PathLike) -> Path:
    """``path`` as a figure file name: its suffix must be one of ``SUFFIXES`` (any case), else
    ``QunlearnError`` naming the supported ones."""
    path = Path(path)
    if path.suffix.lower() not in SUFFIXES:
        got = f"{path.suffix!r} is not a supported figure format" if path.suffix else "no suffix"
        raise QunlearnError(
            f"cannot write a figure to {path} ({got}): use a file name ending in one of "
            f"{', '.join(SUFFIXES)}"
        )
    return path


def stem_suffixes() -> tuple[str, ...]:
    """The formats ``save`` writes for a stem: PNG and PDF, or those named in
    ``$QUNLEARN_FIGURE_FORMATS`` (comma-separated: ``png``, ``png,svg``, ...). PDF is the slowest
    to render; a notebook, a quick look or a test suite often wants PNG alone. A name other than
    png, pdf or svg: ``QunlearnError``."""
    raw = os.environ.get(FORMATS_ENV, "").strip()
    if not raw:
        return DEFAULT_SUFFIXES
    suffixes = ["." + n.strip().lower().removeprefix(".") for n in raw.split(",")]
    if not all(s in SUFFIXES for s in suffixes):
        known = ", ".join(s[1:] for s in SUFFIXES)
        default = ",".join(s[1:] for s in DEFAULT_SUFFIXES)
        raise QunlearnError(
            f"{FORMATS_ENV}={raw!r}: name one or more of {known}, comma-separated "
            f"(unset: {default})"
        )
    return tuple(dict.fromkeys(suffixes))


def figure_paths(path: str | os.PathLike) -> list[Path]:
    """The files ``save`` writes for ``path``: a stem (no suffix) -> one file per format of
    ``stem_suffixes`` (``<stem>.png`` and ``<stem>.pdf`` unless ``$QUNLEARN_FIGURE_FORMATS`` says
    otherwise); a file name ending in .png, .pdf or .svg -> exactly that file; any other suffix:
    ``QunlearnError`` (see ``figure_file``)."""
    path = Path(path)
    if not path.suffix:
        return [path.with_suffix(s) for s in stem_suffixes()]
    return [figure_file(path)]


def save(fig: Figure, path: str | os.PathLike, *, dpi: int = DPI) -> list[Path]:
    """Write ``fig`` (see ``figure_paths``: a stem -> PNG and PDF, a file name -> that file),
    creating the parent directory, then close the figure. Returns the written paths. Each file is
    rendered in memory and written atomically, never through a link (``atomic_write_bytes``)."""
    paths = figure_paths(path)
    try:
        for p in paths:
            check_target(p)  # before any rendering: a link fails at once
        for p in paths:
            buf = io.BytesIO()
            fig.savefig(buf, dpi=dpi, format=p.suffix[1:].lower())
            atomic_write_bytes(p, buf.getvalue())
    finally:
        close(fig)
    return paths


def close(fig: Figure) -> None:
    """Release ``fig``: a figure pyplot manages is closed there (pyplot is never imported here);
    a plain ``Figure`` is simply cleared."""
    pyplot = sys.modules.get("matplotlib.pyplot")
    if pyplot is not None and getattr(fig.canvas, "manager", None) is not None:
        pyplot.close(fig)
    else:
        fig.clear()
