"""What every kind's comparison reads and writes: verified tables, the shared statistics and
the one wording for a statistic that cannot be formed."""

from __future__ import annotations

import csv
import io
import math
from pathlib import Path

import numpy as np

from qunlearn.atomic import atomic_write_text
from qunlearn.errors import QunlearnError


def read_csv(path) -> list[dict]:
    try:
        with open(path, newline="", encoding="utf-8") as f:
            return list(csv.DictReader(f))
    except (OSError, UnicodeDecodeError, csv.Error) as err:
        raise QunlearnError(
            f"cannot read table {path} ({type(err).__name__}: "
            f"{str(err).splitlines()[0] if str(err) else err!r}): rerun the "
            "experiment that wrote it"
        ) from None


def read_results(results_dir: str | Path) -> tuple[dict, list[dict]]:
    """(resolved config, ``results.csv`` rows) of a results directory, rebuilt from the cells that
    verify (see :class:`~qunlearn.experiments.runner.VerifiedResults`)."""
    verified = read_verified(results_dir)
    return verified.config, verified.table()


def read_verified(results_dir: str | Path):
    """The verified view of a results directory; warns once per cell left out or table that
    disagrees with the cells. Needs a ``results.csv``-producing run to have finished a cell."""
    from qunlearn.experiments.runner import VerifiedResults

    verified = VerifiedResults(results_dir)
    verified.warn_problems()
    if not verified.has("results.csv"):
        raise QunlearnError(
            f"no verified cell in {results_dir}: run `qunlearn run CONFIG --out "
            f"{results_dir}` (again) first"
        )
    return verified


def sweep_rows(verified) -> list[dict]:
    """``results.csv`` rows of a verified results directory; for a noise sweep, plus the rows of
    its refinements (``qunlearn run CONFIG --refine``) at the alphas it lacks."""
    rows = verified.table()
    if verified.config.get("experiment") != "noise_sweep":
        return rows
    from qunlearn.experiments.runner import refinements

    def cell(r):
        return r["model"], r["noise"], round(float(r["alpha"]), 3)

    have = {cell(r) for r in rows}
    for refined in refinements(verified.root, verified.config):
        extra = [r for r in refined.table() if cell(r) not in have]
        have |= {cell(r) for r in extra}
        rows = rows + extra
    return rows


def _stats(values) -> tuple[float, float, int]:
    v = np.asarray(values, float)
    return float(np.mean(v)), float(np.std(v)), len(v)


def not_comparable(what: str) -> str:
    """The one wording for a statistic or verdict whose group (a clean baseline, two runs for a
    spread, the paper's row, ...) is missing: printed in its place, never NaN or a verdict."""
    return f"not comparable: {what}"


def _finite(values) -> np.ndarray:
    """The finite values (NaN or infinite ones are diverged runs)."""
    v = np.asarray(values, float)
    return v[np.isfinite(v)]


def _mean_spread(mean: float, std: float | None, unit: str) -> str:
    """``mean±std``, or ``mean (1 <unit>)`` where one value leaves no spread."""
    return f"{mean:.3f} (1 {unit})" if std is None else f"{mean:.3f}±{std:.3f}"


def _write_compare_csv(path: Path, table: list[dict], fields: list[str]) -> None:
    """Through the csv module (quoting), ``\\n``-terminated as compare.csv always was."""
    buf = io.StringIO()
    writer = csv.DictWriter(
        buf, fieldnames=fields, restval="", lineterminator="\n", extrasaction="ignore"
    )
    writer.writeheader()
    writer.writerows(table)
    atomic_write_text(path, buf.getvalue())


def _fmt(x):
    if x is None:
        return "-"
    return f"{x:.3f}" if math.isfinite(x) else "n/a"


RESAMPLES = 2000  # bootstrap resamples of a mean or ratio interval


def mean_interval(values, *, resamples: int = RESAMPLES, seed=0) -> dict[str, float]:
    """Bootstrap 95 % interval of the mean of ``values`` (runs resampled with replacement):
    {lo, hi}; {} with fewer than 2 values. With 5 runs it is rough, but says what ± alone does
    not: how far the mean itself could move."""
    values = np.asarray(values, float)
    if len(values) < 2:
        return {}
    rng = np.random.default_rng(seed)
    means = values[rng.integers(0, len(values), (resamples, len(values)))].mean(axis=1)
    lo, hi = np.percentile(means, [2.5, 97.5])
    return {"lo": float(lo), "hi": float(hi)}
