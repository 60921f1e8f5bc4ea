"""One self-contained HTML page for one or more results directories (``qunlearn report``): per
directory what was run (config, versions, git revision, deviations from the reference), the
comparison with the paper with its pass marks, every figure ``qunlearn plot`` draws (inline
base64 PNG, the same bytes as plot's PNG files) and the wall times. No network, no JavaScript;
every text goes through Jinja2's autoescaping. Like compare and plot, it reads verified cells
only and writes nothing but the page."""

from __future__ import annotations

import base64
import datetime
import io
import json
import math
from pathlib import Path

from qunlearn.atomic import atomic_write_text, check_target
from qunlearn.compare import comparability_lines, compare_verified, data_line, protocol_check
from qunlearn.errors import QunlearnError
from qunlearn.experiments.runner import VerifiedResults
from qunlearn.plotting.results import results_figures
from qunlearn.plotting.style import DPI, close

TEMPLATE = "report.html.j2"
NO_VALUE = "–"


def build_report(results_dirs, out: str | Path = "report.html") -> Path:
    """Write the report of ``results_dirs`` to ``out``; every directory is read (and a bad one
    refused, one line) before the page is written. Returns ``out``."""
    out = Path(out)
    if not results_dirs:
        raise QunlearnError("no results directory given: e.g. qunlearn report results/*")
    if out.suffix.lower() not in (".html", ".htm"):
        raise QunlearnError(f"--out {out}: the report is HTML: use a name ending in .html")
    if out.is_dir():
        raise QunlearnError(f"--out {out} is a directory: pass a file name, e.g. {out}/report.html")
    check_target(out)  # a link or hard-linked file is refused before any work
    verified = {str(d): VerifiedResults(d) for d in results_dirs}  # all readable, before work
    sections = [section(v, i, name) for i, (name, v) in enumerate(verified.items())]
    html = render(sections)
    out.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out, html)
    return out


def section(verified: VerifiedResults, index: int = 0, name=None) -> dict:
    """Everything the page shows for one verified results directory, as plain data; ``name``:
    the directory as the user gave it (default: its path)."""
    results_dir = verified.root if name is None else name
    verified.warn_problems()
    manifest, config = verified.manifest, verified.config
    out = {
        "anchor": f"results-{index}",
        "path": str(results_dir),
        "name": config.get("name"),
        "experiment": config.get("experiment"),
        "run": _provenance(manifest),
        "config_json": json.dumps(config, indent=2, sort_keys=True),
        "deviations": list(manifest.get("deviations_from_reference", [])),
        "problems": [
            f"cell {cell} does not verify ({why}); left out"
            for cell, why in sorted(verified.rejected.items())
        ]
        + [f"{name} on disk does not match the verified cells" for name in verified.stale],
        "timings": _timings(manifest),
        "data_line": None,
        "comparability": [],
        "compare": None,
        "compare_note": None,
        "figures": [],
        "figures_note": None,
    }
    if not verified.has("results.csv"):
        out["compare_note"] = out["figures_note"] = "no verified cell yet: nothing to show"
        return out
    out["data_line"] = data_line(config)
    out["comparability"] = comparability_lines(protocol_check(config))
    try:
        out["compare"] = _comparison(compare_verified(verified))
    except QunlearnError as err:
        out["compare_note"] = str(err)
    try:
        out["figures"] = [
            {"stem": stem, "png_base64": base64.b64encode(png_bytes(fig)).decode("ascii")}
            for stem, fig in results_figures(verified).items()
        ]
    except QunlearnError as err:
        out["figures_note"] = str(err)
    return out


def png_bytes(fig) -> bytes:
    """``fig`` as PNG, exactly as ``plotting.style.save`` writes it (same dpi), then closed."""
    buf = io.BytesIO()
    try:
        fig.savefig(buf, dpi=DPI, format="png")
    finally:
        close(fig)
    return buf.getvalue()


def _provenance(manifest: dict) -> list[tuple[str, str]]:
    data = manifest.get("data", {})
    source = data.get("source", {}) if isinstance(data.get("source"), dict) else {}
    rows = [
        ("git revision", manifest.get("git_revision")),
        ("config hash", manifest.get("config_hash")),
        ("result format", manifest.get("format_version")),
        ("platform", manifest.get("platform")),
        ("JAX backend", manifest.get("jax_backend")),
        ("JAX x64", manifest.get("jax_x64")),
        ("dataset", data.get("dataset")),
        ("encoding", data.get("encoding")),
        ("data source", " ".join(str(v) for v in (source.get("kind"), source.get("sha256")) if v)),
        ("data cache sha256", data.get("cache_sha256")),
    ]
    versions = manifest.get("versions", {})
    rows += [(f"version {k}", v) for k, v in sorted(versions.items())]
    return [(k, NO_VALUE if v in (None, "") else str(v)) for k, v in rows]


def _timings(manifest: dict) -> dict:
    cells = manifest.get("timings", {})
    last = manifest.get("last_run", {})
    rows = [
        {
            "cell": cell,
            "seconds": f"{t.get('seconds', 0.0):.1f}",
            "compile": "yes" if t.get("includes_compile") else "",
            "steps": t.get("optimizer_steps", ""),
        }
        for cell, t in sorted(cells.items())
    ]
    total = sum(float(t.get("seconds", 0.0)) for t in cells.values())
    return {
        "cells": rows,
        "total": f"{total:.1f}",
        "last_seconds": _fmt(last.get("seconds")),
        "computed": len(last.get("computed", [])),
        "reused": len(last.get("reused", [])),
        "interrupted": bool(last.get("interrupted")),
        "nonfinite": sorted(manifest.get("nonfinite", {}) or {}),
    }


def _comparison(result: dict) -> dict:
    """A comparator's result as tables of display strings; booleans become pass marks."""
    summary = result.get("summary", {}) or {}
    scalars = [(k, _fmt(v)) for k, v in summary.items() if not isinstance(v, list | dict)]
    tables, lines = [], []
    for key, value in summary.items():
        if isinstance(value, list) and value and all(isinstance(v, dict) for v in value):
            tables.append({"title": key.replace("_", " "), **_table(value)})
        elif isinstance(value, list):
            lines += [str(v) for v in value]  # e.g. an evaluation's findings
    return {
        "table": _table(result.get("table", [])),
        "scalars": scalars,
        "tables": tables,
        "lines": lines,
        "text": result.get("text", ""),
    }


def _table(rows: list[dict]) -> dict:
    """Rows of dicts as display columns: ``x`` and ``x_std`` (or ``x_mean`` and ``x_std``) become
    one "x ± std" column, ``x``, ``x_lo`` and ``x_hi`` one "x [lo, hi]" column; the naming
    columns (text) come first, then the pass marks (booleans), then the numbers."""
    # Only a "pass" column carries pass marks; other flags (e.g. an alpha_c fit's "resolved")
    # are plain yes / no text.
    rows = [
        {
            k: ("yes" if v else "no") if isinstance(v, bool) and k != "pass" else v
            for k, v in r.items()
        }
        for r in rows
    ]
    keys = list(dict.fromkeys(k for r in rows for k in r))
    groups, used = [], set()
    for key in keys:
        if key in used:
            continue
        base = key.removesuffix("_mean")
        std, lo, hi = f"{base}_std", f"{key}_lo", f"{key}_hi"
        if std in keys and std != key:
            group = (f"{base} ± std", [key, std])
        elif lo in keys and hi in keys:
            group = (f"{key} [95 % CI]", [key, lo, hi])
        else:
            group = (key, [key])
        used |= set(group[1])
        groups.append(group)

    def rank(group) -> int:
        values = [r[group[1][0]] for r in rows if r.get(group[1][0]) is not None]
        if values and all(isinstance(v, str) for v in values):
            return 0
        return 1 if any(isinstance(v, bool) for v in values) else 2

    groups.sort(key=rank)
    return {
        "columns": [title for title, _ in groups],
        "rows": [[_cell(*(r.get(k) for k in ks)) for _, ks in groups] for r in rows],
    }


def _cell(value, *extra) -> dict:
    """{"text", "mark"}: mark (a CSS class) = "pass" / "fail" for a boolean, "num" for a
    number, else "". ``extra``: a std (``value ± std``) or an interval (``value [lo, hi]``)."""
    if isinstance(value, bool):
        return {"text": "✓ yes" if value else "✗ no", "mark": "pass" if value else "fail"}
    text = _fmt(value)
    if value is not None and len(extra) == 1 and extra[0] is not None:
        text += f" ± {_fmt(extra[0])}"
    elif value is not None and len(extra) == 2 and None not in extra:
        text += f" [{_fmt(extra[0])}, {_fmt(extra[1])}]"
    return {"text": text, "mark": "num" if isinstance(value, int | float) else ""}


def _fmt(value) -> str:
    if value is None or value == "":
        return NO_VALUE
    if isinstance(value, float) and not math.isfinite(value):  # the comparators give none
        return "not comparable: not finite"
    if isinstance(value, float):
        return f"{value:.3f}" if abs(value) < 1e4 else f"{value:.4g}"
    if isinstance(value, list | tuple):
        return ", ".join(_fmt(v) for v in value)
    return str(value)


def render(sections: list[dict]) -> str:
    """The page (Jinja2, autoescaped) for ``sections`` from :func:`section`."""
    import jinja2

    from qunlearn import __version__

    env = jinja2.Environment(
        loader=jinja2.PackageLoader("qunlearn", "templates"),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    now = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC")
    return env.get_template(TEMPLATE).render(sections=sections, version=__version__, created=now)
