"""Put a results table beside the paper's published numbers (``qunlearn/reference/*.csv``).

Statistics match the paper's plots: mean and population std (ddof = 0) over runs. A cell passes when
``|mean_ours - mean_paper| <= max(0.03, 2 * std_paper)``.
"""

from __future__ import annotations

import csv
import io
import json
import math
import os
import re
import tempfile
from collections import defaultdict
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np

from qunlearn.atomic import atomic_write_text, check_target
from qunlearn.errors import QunlearnError

REFERENCE_SWEEPS = {"mnist": "fig2c_mnist_noise_sweep.csv", "xxz": "fig2d_xxz_noise_sweep.csv"}
SWEEP_METRICS = ("val_acc", "train_acc_noisy_labels")


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


# --- what is comparable with the paper -------------------------------------------------------

PAPER_CONFIGS = {  # (experiment, dataset) -> the shipped config that states the paper's protocol
    ("noise_sweep", "mnist"): "fig2c_mnist.toml",
    ("noise_sweep", "xxz"): "fig2d_xxz.toml",
    ("unlearning", "mnist"): "fig3a_mnist.toml",
    ("unlearning", "xxz"): "fig3b_xxz.toml",
}
PROTOCOL_MODEL_KEYS = (
    "epochs",
    "batch_size",
    "lr",
    "hyper",
    "unlearn_epochs",
    "unlearn_batch_size",
    "unlearn_lr",
    "weight_decay",
    "label_smoothing",
)
PROTOCOL_DEFAULTS = {"weight_decay": 0.0, "label_smoothing": 0.0}  # the paper's, where unstated
PROTOCOL_TOP_KEYS = {"noise_sweep": (), "unlearning": ("alpha", "noise")}
# Hyperparameters that change the arithmetic's precision, not the experiment: a complex64 run with
# its float64 readout (bench/paper.py --complex64) is still judged against the paper.
NUMERICS_ONLY = {"dtype", "readout_dtype"}
VARIANTS = {"encoding", "phase"}  # dataset options naming a documented variant (still comparable)


def _paper_config(experiment: str, dataset: str) -> dict | None:
    name = PAPER_CONFIGS.get((experiment, dataset))
    if name is None:
        return None
    import tomllib

    data = tomllib.loads((resources.files("qunlearn") / "configs" / name).read_text())
    data.pop("tiny", None)
    return data


def _full_hyper(kind: str, hyper: dict) -> dict:
    """``hyper`` with the factory's defaults filled in and numerics-only keys dropped."""
    import inspect

    from qunlearn.models import MODELS

    factory = MODELS.builtin(kind)  # never a user's: reading results imports no named module
    if factory is None:
        return dict(hyper)
    params = list(inspect.signature(factory).parameters.values())[2:]
    full = {p.name: p.default for p in params if p.default is not inspect.Parameter.empty}
    full |= hyper
    return {k: v for k, v in full.items() if k not in NUMERICS_ONLY}


def protocol_check(config: dict) -> dict:
    """Which of our model tables can be judged against the paper, and why not.

    Returns {"kinds": {table: paper model "mlp"/"qnn" or None}, "differences": {table: ["key =
    ours (paper ...)", ...]}, "general": [...], "same_data": whether the data set's options are
    the paper's (other MNIST digits are not)}: a table is comparable when its model kind is the
    paper's and every setting of the paper's protocol (the shipped figure config) is the
    same; dataset options that name a documented variant (encoding, phase) and numerics-only
    hyperparameters (dtype, readout_dtype) do not count.
    """
    experiment, dataset = config.get("experiment", ""), config.get("dataset", "")
    paper = _paper_config(experiment, dataset)
    kinds: dict[str, str | None] = {}
    differences: dict[str, list[str]] = {}
    general: list[str] = []
    if paper is None:
        return {
            "kinds": {},
            "differences": {},
            "general": ["no published numbers"],
            "same_data": False,
        }
    for key in PROTOCOL_TOP_KEYS.get(experiment, ()):
        if config.get(key, paper.get(key)) != paper.get(key, config.get(key)):
            general.append(f"{key} = {config.get(key)!r} (paper {paper.get(key)!r})")
    if config.get("forget", "poison") != "poison":  # the paper forgets the whole poison
        general.append(f"forget = {config['forget']!r} (paper 'poison')")
    ours_options = {k: v for k, v in config.get("dataset_options", {}).items() if k not in VARIANTS}
    paper_options = {k: v for k, v in paper.get("dataset_options", {}).items() if k not in VARIANTS}
    if ours_options != paper_options:
        general.append(f"dataset_options = {ours_options} (paper {paper_options})")
    paper_models = {spec["model"]: spec for spec in paper.get("models", {}).values()}
    for table, spec in config.get("models", {}).items():
        kind = spec.get("model")
        if kind not in paper_models:
            kinds[table] = None
            differences[table] = [f"models.{table}.model = {kind!r}: the paper has no such model"]
            continue
        kinds[table] = kind
        ref, diffs = paper_models[kind], []
        for key in PROTOCOL_MODEL_KEYS:
            if key not in ref and key not in PROTOCOL_DEFAULTS:
                continue
            ours = spec.get(key, PROTOCOL_DEFAULTS.get(key))
            theirs = ref.get(key, PROTOCOL_DEFAULTS.get(key))
            if key == "hyper":
                ours, theirs = _full_hyper(kind, ours or {}), _full_hyper(kind, theirs)
            if ours != theirs:
                diffs.append(f"models.{table}.{key} = {ours!r} (paper {theirs!r})")
        differences[table] = general + diffs
    same_data = ours_options == paper_options
    return {"kinds": kinds, "differences": differences, "general": general, "same_data": same_data}


def request_line(config: dict) -> str:
    """The forget request of an unlearning-style result, for a compare header; "" for the
    default (the whole poison), so those outputs read as before requests existed."""
    forget = config.get("forget", "poison")
    if forget == "poison":
        return ""
    option = {
        "poison_partial": "known",
        "clean_random": "forget_fraction",
        "class": "forget_class",
    }.get(forget, "")
    value = config.get(option, 0.0)
    shown = f", {option} = {value}" if value or forget == "class" else ""
    return f"forget request: {forget}{shown}\n"


def data_line(config: dict) -> str:
    """What data the result used, naming the MNIST encoding (every compare names it)."""
    options = config.get("dataset_options", {})
    if config.get("dataset") == "mnist":
        return f"data: mnist, encoding {options.get('encoding', 'unit')!r}"
    extra = ", ".join(f"{k} {v!r}" for k, v in sorted(options.items()))
    return f"data: {config.get('dataset')}" + (f", {extra}" if extra else "")


def comparability_lines(check: dict) -> list[str]:
    return [
        f"not comparable with the paper (no pass marks) for models.{table}: "
        + "; ".join(d.removeprefix(f"models.{table}.") for d in diffs)
        for table, diffs in check["differences"].items()
        if diffs
    ]


def reference_rows(name: str) -> list[dict]:
    return read_csv(resources.files("qunlearn") / "reference" / name)


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


def critical_alpha(alphas, accs, threshold: float = 0.5) -> float | None:
    """First alpha where mean validation accuracy crosses ``threshold`` (linearly interpolated)."""
    pairs = sorted(zip(alphas, accs, strict=True))
    for (a0, v0), (a1, v1) in zip(pairs, pairs[1:], strict=False):
        if v0 >= threshold > v1:
            return a0 + (v0 - threshold) * (a1 - a0) / (v0 - v1)
    return None


def compare_sweep(
    results: list[dict],
    model_kinds: dict | None = None,
    judged: set | None = None,
    with_paper: bool = True,
) -> list[dict]:
    """One row per (dataset, model, noise, alpha, metric) present in ``results``, ours vs paper.

    ``model_kinds`` maps our model table names to the paper's model ("mlp"/"qnn"; default: the
    table name); only tables in ``judged`` (default: all) get a pass mark; ``with_paper=False``
    (other data than the paper's, e.g. MNIST 3 vs 5): ours only."""
    model_kinds = model_kinds or {}
    ours = defaultdict(list)
    for row in results:
        if row["metric"] in SWEEP_METRICS:
            key = (
                row["dataset"],
                row["model"],
                row["noise"],
                round(float(row["alpha"]), 3),
                row["metric"],
            )
            ours[key].append(float(row["value"]))
    paper = defaultdict(list)
    for dataset in {k[0] for k in ours}:
        if dataset not in REFERENCE_SWEEPS or not with_paper:
            continue
        for row in reference_rows(REFERENCE_SWEEPS[dataset]):
            for metric in SWEEP_METRICS:
                key = (
                    row["dataset"],
                    row["model"],
                    row["noise"],
                    round(float(row["alpha"]), 3),
                    metric,
                )
                paper[key].append(float(row[metric]))
    table = []
    for key in sorted(ours):
        finite = _finite(ours[key])
        out = dict(zip(("dataset", "model", "noise", "alpha", "metric"), key, strict=True))
        out["ours_runs"] = len(ours[key])
        out["ours_nonfinite"] = len(ours[key]) - finite.size
        if finite.size:  # diverged (NaN) runs are counted, not averaged
            out["ours_mean"] = float(finite.mean())
        if finite.size >= 2:  # a spread needs two runs
            out["ours_std"] = float(finite.std())
        paper_key = (key[0], model_kinds.get(key[1], key[1]), *key[2:])
        if paper_key in paper:
            pmean, pstd, pn = _stats(paper[paper_key])
            tol = max(0.03, 2 * pstd)
            out |= {"paper_mean": pmean, "paper_std": pstd, "paper_runs": pn, "tolerance": tol}
            if out["ours_nonfinite"]:  # no verdict on the runs that happened to converge
                out["not_comparable"] = not_comparable(
                    f"{out['ours_nonfinite']} of {out['ours_runs']} runs not finite (diverged)"
                )
                table.append(out)
                continue
            out["diff"] = out["ours_mean"] - pmean
            if judged is None or key[1] in judged:
                out["pass"] = abs(out["diff"]) <= tol
        table.append(out)
    return table


def sweep_runs(rows: list[dict], model_kinds: dict | None = None, metric: str = "val_acc") -> dict:
    """{(dataset, model, noise): {alpha: [``metric`` per run]}} from tidy rows (metric, value) or
    the paper's wide rows (a ``val_acc`` column); ``model_kinds`` renames models (ours ->
    paper's)."""
    model_kinds = model_kinds or {}
    out: defaultdict[tuple[str, str, str], defaultdict[float, list[float]]]
    out = defaultdict(lambda: defaultdict(list))
    for row in rows:
        if "metric" in row and row["metric"] != metric:
            continue
        value = row["value"] if "metric" in row else row[metric]
        key = (row["dataset"], model_kinds.get(row["model"], row["model"]), row["noise"])
        out[key][round(float(row["alpha"]), 3)].append(float(value))
    return out


def _transition_fields(runs: dict | None, who: str) -> dict:
    """α_c fitted to the mean curve with bootstrap 95 % intervals (qunlearn.experiments.
    transition), as ``alpha_c_fit_<who>``, ``..._lo/_hi``, ``width_<who>``, ``..._lo/_hi``."""
    from qunlearn.experiments.transition import bootstrap_transition

    if not runs:  # no curve at all (e.g. no paper row): "-" says so
        return {}
    fit = bootstrap_transition(runs)
    if fit is None:
        alphas = sum(bool(_finite(v).size) for v in runs.values())
        why = "did not converge" if alphas >= 4 else f"needs 4+ noise ratios, here {alphas}"
        return {f"fit_{who}_not_comparable": not_comparable(f"the logistic fit {why}")}
    note = {}
    if fit["alpha_c"] is not None and fit["alpha_c_lo"] is None and fit["runs"] < 2:
        note = {f"interval_{who}_not_comparable": not_comparable("1 run per noise ratio")}
    return note | {
        f"alpha_c_fit_{who}": fit["alpha_c"],
        f"alpha_c_fit_{who}_lo": fit["alpha_c_lo"],
        f"alpha_c_fit_{who}_hi": fit["alpha_c_hi"],
        f"width_{who}": fit["width"],
        f"width_{who}_lo": fit["width_lo"],
        f"width_{who}_hi": fit["width_hi"],
        f"crossing_fraction_{who}": fit["crossing_fraction"],
        f"resolved_{who}": fit["resolved"],
    }


def critical_alphas(
    table: list[dict],
    runs: dict | None = None,
    paper_runs: dict | None = None,
    model_kinds: dict | None = None,
) -> list[dict]:
    """alpha_c (val accuracy crossing 0.5) per (dataset, model, noise), ours and the paper's.

    ``alpha_c_ours`` / ``alpha_c_paper`` interpolate the mean curves linearly (the paper's point
    value). With per-run values (``runs`` ours, ``paper_runs`` the paper's, both from
    :func:`sweep_runs`; the paper's keyed by its model kind, ``model_kinds`` maps ours to it) each
    side also gets the logistic fit's α_c and width with bootstrap 95 % intervals."""
    model_kinds = model_kinds or {}
    paper_fits: dict[tuple, dict] = {}
    groups = defaultdict(list)
    for row in table:
        if row["metric"] == "val_acc":
            groups[(row["dataset"], row["model"], row["noise"])].append(row)
    out = []
    for (dataset, model, noise), rows in sorted(groups.items()):
        finite = [r for r in rows if "ours_mean" in r]  # an alpha with only NaN runs: none
        alphas = [r["alpha"] for r in finite]
        entry = {
            "dataset": dataset,
            "model": model,
            "noise": noise,
            "alpha_c_ours": critical_alpha(alphas, [r["ours_mean"] for r in finite]),
        }
        if len(alphas) < 2:
            entry["alpha_c_ours_not_comparable"] = not_comparable(
                f"{len(alphas)} noise ratio(s) with finite runs: a crossing needs 2 or more"
            )
        paper = (paper_runs or {}).get((dataset, model_kinds.get(model, model), noise))
        if paper:  # the paper's own grid, whatever extra alphas we ran
            grid = sorted(paper)
            entry["alpha_c_paper"] = critical_alpha(grid, [np.mean(paper[a]) for a in grid])
        elif all("paper_mean" in r for r in rows):
            entry["alpha_c_paper"] = critical_alpha(alphas, [r["paper_mean"] for r in rows])
        if runs is not None:
            entry |= _transition_fields(runs.get((dataset, model, noise)), "ours")
            paper_key = (dataset, model_kinds.get(model, model), noise)
            if paper_key not in paper_fits:  # one bootstrap per paper curve, not per table
                paper_fits[paper_key] = _transition_fields(paper, "paper")
            entry |= paper_fits[paper_key]
        out.append(entry)
    return out


READOUT_METRIC = re.compile(r"val_acc_(?:shots(?P<shots>\d+)|noise_(?P<noise>[a-z0-9_]+))$")


def readout_transitions(rows: list[dict]) -> list[dict]:
    """α_c and transition width per (dataset, model, noise) and readout, from a sweep's
    ``val_acc_shots<S>`` (``eval_shots``) and ``val_acc_noise_<label>`` (``eval_circuit_noise``)
    metrics, the same trained params read out with S shots or under a circuit-noise model,
    beside the exact ``val_acc``; each with its bootstrap 95 % intervals over runs
    (:func:`qunlearn.experiments.transition.bootstrap_transition`). ``readout``: ``"exact"``,
    ``"S=<S>"`` or ``"noise <label>"``; [] without such metrics."""
    found = {
        m.group(0): m for r in rows if "metric" in r and (m := READOUT_METRIC.match(r["metric"]))
    }
    if not found:
        return []

    def order(metric):  # shots by count, then noise models by name
        m = found[metric]
        return (0, int(m["shots"]), "") if m["shots"] else (1, 0, m["noise"])

    out = []
    for metric in (*sorted(found, key=order), "val_acc"):
        m = found.get(metric)
        readout = (
            "exact" if m is None else f"S={m['shots']}" if m["shots"] else f"noise {m['noise']}"
        )
        for (dataset, model, noise), runs in sorted(sweep_runs(rows, metric=metric).items()):
            out.append(
                {"dataset": dataset, "model": model, "noise": noise, "readout": readout}
                | _transition(runs)
            )
    return out


def _transition(runs: dict | None) -> dict:
    """:func:`_transition_fields` of one curve, unprefixed: ``alpha_c``, ``alpha_c_lo/_hi``,
    ``width``, ``width_lo/_hi``, ``resolved``, ... or ``fit_not_comparable``."""
    fields = _transition_fields(runs, "ours")
    return {k.replace("_fit_ours", "").replace("_ours", ""): v for k, v in fields.items()}


def format_readout_transitions(rows: list[dict]) -> str:
    """One line per (dataset, model, noise, readout): α_c and width with their intervals."""
    lines = [
        "readouts (eval_shots, eval_circuit_noise: the same trained params, read out with S "
        "shots per example or under a circuit-noise model):"
    ]
    width = max(16, *(len(r["readout"]) for r in rows))  # device readouts' names are long
    for r in rows:
        head = f"  {r['dataset']} {r['model']} {r['noise']} {r['readout']:>{width}}:"
        if "fit_not_comparable" in r:
            lines.append(f"{head} fit {r['fit_not_comparable']}")
            continue
        lines.append(
            f"{head} alpha_c {_fmt(r.get('alpha_c'))}{_interval(r, 'alpha_c')}, width "
            f"{_fmt(r.get('width'))}{_interval(r, 'width')}"
        )
    return "\n".join(lines)


def format_critical(crit: list[dict]) -> str:
    """One line per (dataset, model, noise): interpolated α_c, then the fit with 95 % intervals."""

    def fit(c, who):
        if f"fit_{who}_not_comparable" in c:
            return f" (fit {c[f'fit_{who}_not_comparable']})"
        if f"alpha_c_fit_{who}" not in c:
            return ""
        ci = _interval(c, f"alpha_c_fit_{who}")
        if f"interval_{who}_not_comparable" in c:
            ci = f" [interval {c[f'interval_{who}_not_comparable']}]"
        width = _interval(c, f"width_{who}")
        sharp = "" if c.get(f"resolved_{who}", True) else ", sharper than the grid: refine it"
        return (
            f" (fit {_fmt(c[f'alpha_c_fit_{who}'])}{ci}, width {_fmt(c[f'width_{who}'])}{width}"
            f"{sharp})"
        )

    def ours(c):
        return c.get("alpha_c_ours_not_comparable") or _fmt(c["alpha_c_ours"])

    return "\n".join(
        f"alpha_c {c['dataset']} {c['model']} {c['noise']}: ours {ours(c)}"
        f"{fit(c, 'ours')}, paper {_fmt(c.get('alpha_c_paper'))}{fit(c, 'paper')}"
        for c in crit
    )


def _interval(c: dict, name: str) -> str:
    lo, hi = c.get(f"{name}_lo"), c.get(f"{name}_hi")
    return "" if lo is None or hi is None else f" [{lo:.3f}, {hi:.3f}]"


def format_table(table: list[dict]) -> str:
    lines = [
        f"{'dataset':7} {'model':5} {'noise':22} {'alpha':>5} {'metric':23} "
        f"{'ours':>14} {'paper':>14} {'diff':>7} pass"
    ]
    for r in table:
        ours = "-"
        if "ours_mean" in r:
            ours = _mean_spread(r["ours_mean"], r.get("ours_std"), "run")
        paper = f"{r['paper_mean']:.3f}±{r['paper_std']:.3f}" if "paper_mean" in r else "-"
        diff = f"{r['diff']:+.3f}" if "diff" in r else "-"
        ok = ("yes" if r["pass"] else "NO") if "pass" in r else r.get("not_comparable", "-")
        if ok == "-" and r["ours_nonfinite"]:
            ok = f"{r['ours_nonfinite']} of {r['ours_runs']} runs not finite, left out"
        lines.append(
            f"{r['dataset']:7} {r['model']:5} {r['noise']:22} {r['alpha']:5.2f} "
            f"{r['metric']:23} {ours:>14} {paper:>14} {diff:>7} {ok}"
        )
    return "\n".join(lines)


def compare_results_dir(results_dir: str | Path, out: str | Path | None = None) -> dict:
    """Compare the verified cells of ``results_dir`` with the paper; writes ``compare.csv`` and
    ``compare.json`` into ``out`` (default: ``results_dir``; pass another for a read-only one)."""
    results_dir = Path(results_dir)
    out = check_target(out if out is not None else results_dir)  # never a link
    verified = read_verified(results_dir)
    _comparator(verified.config["experiment"])  # an unknown kind first
    for name in (
        "compare.csv",
        "compare.json",
        *COMPARE_FILES.get(verified.config["experiment"], ()),
    ):
        check_target(out / name)  # a link there too, before any is written
    if not os.access(out if out.exists() else out.parent, os.W_OK):
        raise QunlearnError(f"{out} is not writable: pass --out DIR for the comparison files")
    return compare_verified(verified, out)


def _comparator(kind: str):
    if kind not in COMPARATORS:
        raise QunlearnError(f"no published numbers to compare a {kind!r} experiment with")
    return COMPARATORS[kind]


def compare_verified(verified, out: str | Path | None = None) -> dict:
    """The comparison of a verified results directory (see :func:`read_verified`):
    {"table", "text", ...} as the comparator of its kind returns it, the text headed by the data
    and comparability lines. Writes ``compare.csv``/``compare.json`` into ``out``; ``out=None``
    writes nothing of it anywhere (the comparators write as they go, so they write into a scratch
    directory that is removed again)."""
    comparator = _comparator(verified.config["experiment"])
    if out is None:
        with tempfile.TemporaryDirectory(prefix="qunlearn-compare-") as scratch:
            return compare_verified(verified, scratch)
    manifest = verified.manifest
    kind = manifest["config"]["experiment"]
    result = comparator(Path(out), sweep_rows(verified), manifest, verified.table)
    head = [data_line(manifest["config"])]
    if kind in PROTOCOL_TOP_KEYS:
        head += comparability_lines(protocol_check(manifest["config"]))
    result["text"] = "\n".join(head) + "\n" + result["text"]
    return result


def _compare_sweep_dir(results_dir: Path, results: list[dict], manifest: dict, tables=None) -> dict:
    check = protocol_check(manifest["config"])
    judged = {t for t, d in check["differences"].items() if not d}
    kinds = {t: k for t, k in check["kinds"].items() if k}
    table = compare_sweep(results, kinds, judged, with_paper=check["same_data"])
    paper_runs: dict[tuple[str, str, str], dict[float, list[float]]] = {}
    for dataset in {r["dataset"] for r in results} & set(REFERENCE_SWEEPS):
        if check["same_data"]:  # other data (e.g. MNIST 3 vs 5): the paper's curve is not its
            paper_runs |= sweep_runs(reference_rows(REFERENCE_SWEEPS[dataset]))
    crit = critical_alphas(table, sweep_runs(results), paper_runs, kinds)
    fields = [
        "dataset",
        "model",
        "noise",
        "alpha",
        "metric",
        "ours_mean",
        "ours_std",
        "ours_runs",
        "paper_mean",
        "paper_std",
        "paper_runs",
        "diff",
        "tolerance",
        "pass",
        "ours_nonfinite",
        "not_comparable",
    ]
    _write_compare_csv(results_dir / "compare.csv", table, fields)
    compared = [r for r in table if "pass" in r]
    summary = {
        "cells": len(compared),
        "passed": sum(r["pass"] for r in compared),
        "not_comparable": sum("not_comparable" in r for r in table),
        "critical_alpha": crit,
    }
    readouts = readout_transitions(results)
    if readouts:
        summary["readouts"] = readouts
    atomic_write_text(results_dir / "compare.json", json.dumps(summary, indent=2))
    text = format_table(table) + "\n\n" + f"passed {summary['passed']}/{summary['cells']} cells"
    if summary["not_comparable"]:
        text += f"; {summary['not_comparable']} not comparable (runs not finite)"
    text += "\n"
    text += (
        "alpha_c: mean val acc crossing 0.5, linearly interpolated (the paper's point value); "
        "fit: the same crossing of a logistic fit, bootstrap 95 % interval over runs per alpha "
        "[lo, hi]; width: its 90 %..10 % drop\n"
    )
    text += format_critical(crit)
    if readouts:
        text += "\n\n" + format_readout_transitions(readouts)
    return {"table": table, "summary": summary, "text": text}


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


COMPARE_FILES: dict[str, tuple[str, ...]] = {}  # kind -> what its comparator writes beside
# kind -> comparator(out, results.csv rows, manifest, tables: name -> that verified table's rows)
COMPARATORS = {"noise_sweep": _compare_sweep_dir}


# --- across data sets: one α_c / width table of several noise sweeps ---------------------------

ACROSS_FILES = ("across.csv", "across.json")
ACROSS_FIELDS = [
    "dataset",
    "size",
    "n_spins",
    "model",
    "role",
    "noise",
    "runs",
    "val_acc_alpha0",
    "alpha_c",
    "alpha_c_lo",
    "alpha_c_hi",
    "width",
    "width_lo",
    "width_hi",
    "resolved",
    "fit_not_comparable",
    "interval_not_comparable",
    "results",
]
ROLE_ORDER = ("mlp", "qnn", "logistic")  # rows of one data set: MLP, QNN, then the control
# Below this clean accuracy (α = 0) a binary model has not learnt the task: its "transition" is a
# fit of a curve that starts near chance (Iris's 2-qubit QNN: .58), flagged in the table. With C
# classes the bar is as far from chance, 1/C + 0.4·(1 − 1/C) (3 classes: .60).
MIN_LEARNT = 0.7


def data_classes(data: dict) -> int:
    """A result's class count, from its manifest's data block (2 where it does not say)."""
    return max(2, len(data.get("n_train_per_class") or ()))


def min_learnt(n_classes: int = 2) -> float:
    """The clean accuracy a model of ``n_classes`` classes must reach to count as learnt."""
    chance = 1.0 / n_classes
    return chance + (MIN_LEARNT - 0.5) / 0.5 * (1.0 - chance)


def learns_little(row: dict) -> bool:
    """Whether an across row's model stays below its learnt bar at α = 0 (``min_learnt``, the
    binary ``MIN_LEARNT`` where the row does not say): its transition is a fit near chance."""
    clean = row.get("val_acc_alpha0")
    return clean is not None and clean < row.get("min_learnt", MIN_LEARNT)


def model_role(spec: dict) -> str:
    """A model table's part in the resilience study: ``"logistic"`` for an MLP without hidden
    layers (the logistic-regression control), else its model kind (``"mlp"``, ``"qnn"``, ...)."""
    kind = spec.get("model", "")
    if kind == "mlp" and list(_full_hyper(kind, spec.get("hyper") or {}).get("hidden", [0])) == []:
        return "logistic"
    return kind


def data_size(config: dict, data: dict) -> tuple[str, int | None]:
    """(a short label of a data set's size and variant, e.g. "12 spins, random phase", "3 vs 5,
    reference", "versicolor vs virginica, amplitude"; its spins or None), from the manifest's
    data block (``parameters``, ``classes``, ``encoding``, ``phase``), else the config's dataset
    options."""
    params = config.get("dataset_options", {}) | data.get("parameters", {})
    parts = []
    if params.get("n_spins") is not None:
        parts.append(f"{params['n_spins']} spins")
    classes = data.get("classes") or params.get("digits") or params.get("classes")
    if isinstance(classes, list):
        parts.append(" vs ".join(map(str, classes)))
    encoding = data.get("encoding") or params.get("encoding")
    if isinstance(encoding, str):
        parts.append(encoding.split(":")[0].strip())  # "amplitude: standardise ..." -> amplitude
    phase = data.get("phase") or params.get("phase")  # a global phase per state: MLPs see it
    if isinstance(phase, str):
        parts.append(f"{phase.split()[0]} phase")  # "random (PRNGKey(0))" -> random phase
    n_spins = params.get("n_spins")
    return ", ".join(parts), n_spins if isinstance(n_spins, int) else None


def across_rows(results: list[dict]) -> list[dict]:
    """One row per (data set, model table, noise) of several noise sweeps: the fitted α_c and the
    90 %..10 % width of the drop with their bootstrap 95 % intervals (:func:`_transition`), the
    mean clean validation accuracy at α = 0 (a model that never learnt has no transition to
    speak of), and the fewest runs at any α.

    ``results``: one {"results": its name, "config", "data": the manifest's data block, "rows":
    its results.csv rows} per sweep. Data sets keep the order they first appear in; within one,
    rows go by spins (so the qubit dependence reads down the table), then by size as given; within
    a size MLP, QNN, the logistic control, then other models (so the MLP and QNN halves of one
    figure run apart, ``--models``, sit together)."""
    out = []
    for index, res in enumerate(results):
        config = res["config"]
        size, n_spins = data_size(config, res.get("data") or {})
        roles = {table: model_role(spec) for table, spec in config.get("models", {}).items()}
        for (dataset, model, noise), runs in sorted(sweep_runs(res["rows"]).items()):
            clean = _finite(runs.get(0.0, []))
            row = {
                "dataset": dataset,
                "size": size,
                "n_spins": n_spins,
                "model": model,
                "role": roles.get(model, model),
                "noise": noise,
                "runs": min(len(v) for v in runs.values()),
                "val_acc_alpha0": float(clean.mean()) if clean.size else None,
                "min_learnt": min_learnt(data_classes(res.get("data") or {})),
                "results": res["results"],
            }
            out.append(row | _transition(runs) | {"_index": index})
    first: dict = {}  # data set, and (data set, size), -> where it first appears
    for row in out:
        first.setdefault(row["dataset"], len(first))
        first.setdefault((row["dataset"], row["size"]), len(first))

    def order(row):
        role = row["role"]
        rank = ROLE_ORDER.index(role) if role in ROLE_ORDER else len(ROLE_ORDER)
        spins = row["n_spins"] if row["n_spins"] is not None else -1
        group = (first[row["dataset"]], spins, first[(row["dataset"], row["size"])])
        return (*group, rank, row["_index"], row["model"], row["noise"])

    return [{k: v for k, v in r.items() if k != "_index"} for r in sorted(out, key=order)]


def model_label(row: dict) -> str:
    """The role, and the model table where it is named otherwise (``logistic (lr)``)."""
    return row["role"] if row["model"] == row["role"] else f"{row['role']} ({row['model']})"


def _value_interval(row: dict, name: str) -> str:
    return f"{_fmt(row.get(name))}{_interval(row, name)}"


def format_across(rows: list[dict]) -> str:
    """The across-data table: one line per (data set, model, noise), α_c and width with their
    95 % intervals; a fit that fails or never crosses 0.5 says so in their place, and a model
    whose clean accuracy stays below its bar (:func:`learns_little`) is flagged."""
    columns = {  # header -> cell, left-aligned text columns sized to their widest cell
        "dataset": lambda r: r["dataset"],
        "size": lambda r: r["size"] or "-",
        "model": model_label,
        "noise": lambda r: r["noise"],
    }
    cells = [[cell(r) for cell in columns.values()] for r in rows]
    widths = [max([len(h), *(len(c[i]) for c in cells)]) for i, h in enumerate(columns)]

    def text(values):
        return " ".join(f"{v:{w}}" for v, w in zip(values, widths, strict=True))

    lines = [text(columns) + f" {'runs':>4} {'val@0':>6}  {'alpha_c [95 %]':22} width [95 %]"]
    for r, values in zip(rows, cells, strict=True):
        start = text(values) + f" {r['runs']:>4} {_fmt(r['val_acc_alpha0']):>6}  "
        if "fit_not_comparable" in r:
            lines.append(start + r["fit_not_comparable"])
            continue
        if r.get("alpha_c") is None:
            lines.append(start + not_comparable("the fitted curve never crosses 0.5"))
            continue
        alpha, width = _value_interval(r, "alpha_c"), _value_interval(r, "width")
        notes = [r["interval_not_comparable"]] if "interval_not_comparable" in r else []
        if not r.get("resolved", True):
            notes.append("sharper than the grid: refine it")
        if learns_little(r):
            bar = r.get("min_learnt", MIN_LEARNT)
            notes.append(f"learns little (val@0 < {bar:.2g}): a fit of a curve near chance")
        lines.append(start + f"{alpha:22} {width}" + (f"  ({'; '.join(notes)})" if notes else ""))
    return "\n".join(lines)


ACROSS_NOTE = (
    "alpha_c: where the logistic fit of the mean clean validation accuracy crosses 0.5; width: "
    "its 90 %..10 % drop; [95 %]: bootstrap over runs per alpha; val@0: mean clean validation "
    "accuracy at alpha = 0"
)


def read_across(results_dirs: list) -> list[dict]:
    """:func:`across_rows` of results directories (read only, from their verified cells); a
    directory that is not a noise sweep is refused before any is read further."""
    results = []
    for path in results_dirs:
        verified = read_verified(path)
        kind = verified.config.get("experiment")
        if kind != "noise_sweep":
            raise QunlearnError(
                f"{path} holds a {kind!r} experiment: the across-data table reads noise sweeps "
                "only (e.g. qunlearn run configs/fig2_tfim.toml)"
            )
        results.append(
            {
                "results": str(path),
                "config": verified.config,
                "data": verified.manifest.get("data") or {},
                "rows": sweep_rows(verified),
            }
        )
    return across_rows(results)


def compare_across(results_dirs: list, out: str | Path | None = None) -> dict:
    """The across-data table of several noise sweeps, {"rows", "text"}; writes ``across.csv``
    and ``across.json`` into ``out`` (default: nowhere; the results directories are never
    written), each checked before any is written."""
    rows = read_across(results_dirs)
    if out is not None:
        out = check_target(out)
        for name in ACROSS_FILES:
            check_target(out / name)
        out.mkdir(parents=True, exist_ok=True)
        if not os.access(out, os.W_OK):
            raise QunlearnError(f"{out} is not writable: pass another --out DIR")
        _write_compare_csv(out / "across.csv", rows, ACROSS_FIELDS)
        finite = [{k: _json_number(v) for k, v in r.items()} for r in rows]
        atomic_write_text(out / "across.json", json.dumps({"rows": finite}, indent=2))
    return {"rows": rows, "text": format_across(rows) + "\n" + ACROSS_NOTE}


def _json_number(value):
    """None for a float that is not finite (JSON has no NaN), else the value."""
    return None if isinstance(value, float) and not math.isfinite(value) else value


# --- Fig 3: unlearning trajectories ------------------------------------------------------------

REFERENCE_UNLEARNING = {
    ("mnist", "mlp"): "fig3a_mnist_mlp_unlearning.csv",
    ("mnist", "qnn"): "fig3a_mnist_qnn_unlearning.csv",
    ("xxz", "mlp"): "fig3b_xxz_mlp_unlearning.csv",
    ("xxz", "qnn"): "fig3b_xxz_qnn_unlearning.csv",
}
PAPER_METHODS = ("retrain", "finetune", "scrub", "gradient_ascent")
FINAL_EPOCH = 49  # the paper logs at the START of each epoch: its last point is after 49 epochs
FINAL_TOL, START_TOL = 0.04, 0.03
ORDER_GAP = 0.02  # paper methods closer than this count as tied when checking the ordering
CURVE_METRICS = ("val_acc", "forget_frac_poisoned_label")


def _curves(rows, metric: str) -> dict:
    """{key: {epoch: [values over runs]}} with key = (dataset, model, method)."""
    out: defaultdict[tuple[str, str, str], defaultdict[int, list[float]]]
    out = defaultdict(lambda: defaultdict(list))
    for r in rows:
        out[(r["dataset"], r["model"], r["method"])][int(r["epoch"])].append(float(r[metric]))
    return out


def diverged_as_nan(results: list[dict]) -> list[dict]:
    """``results`` with the metrics of a run at an epoch whose loss is not finite set to NaN: the
    accuracy of NaN parameters is a number, but not a measurement."""
    bad = {
        (r["dataset"], r["model"], r["method"], r["run"], r["epoch"])
        for r in results
        if r["metric"] == "loss" and not np.isfinite(float(r["value"]))
    }
    if not bad:
        return results
    return [
        r | {"value": "nan"}
        if (r["dataset"], r["model"], r["method"], r["run"], r["epoch"]) in bad
        else r
        for r in results
    ]


def compare_unlearning(
    results: list[dict], model_kinds: dict[str, str], judged: set | None = None
) -> dict:
    """Our Fig 3 rows (tidy) against the paper's, per (dataset, model, method).

    ``model_kinds`` maps our model names to "mlp" / "qnn" (which reference file). Returns
    {"table": [...], "ordering": [...]}: final (epoch 49) and starting (epoch 0) val acc, mean ± std
    (ddof 0; the std needs two runs), the mean absolute difference of the mean val-acc curves over
    epochs 0..49, and whether the methods rank the same (pairs the paper separates by more than
    ORDER_GAP; the ordering needs two of the paper's methods). Only models in ``judged`` (default:
    all) are set beside the paper; the others report their own last logged epoch as "final". Runs
    whose loss is not finite (diverged) are left out of every statistic and counted; a method with
    any gets no pass mark but ``not_comparable`` (why).
    """
    results = diverged_as_nan(results)
    ours: dict[str, defaultdict[tuple[str, str, str], defaultdict[int, list[float]]]]
    ours = {m: defaultdict(lambda: defaultdict(list)) for m in CURVE_METRICS}
    variants = {}
    for r in results:
        if r["metric"] in CURVE_METRICS:
            key = (r["dataset"], r["model"], r["method"])
            ours[r["metric"]][key][int(r["epoch"])].append(float(r["value"]))
            variants[key] = r["variant"]
    paper: dict[str, dict[tuple[str, str, str], defaultdict[int, list[float]]]]
    paper = {m: {} for m in CURVE_METRICS}
    for dataset, model in {(k[0], k[1]) for k in variants}:
        name = REFERENCE_UNLEARNING.get((dataset, model_kinds.get(model, model)))
        if name is not None:
            ref = [r | {"model": model} for r in reference_rows(name)]  # under our model name
            for m in CURVE_METRICS:
                paper[m].update(_curves(ref, m))
    table = []
    for key in sorted(variants, key=lambda k: (k[0], k[1], _method_rank(k[2]))):
        val = ours["val_acc"][key]
        epochs = sorted(e for e in val if e <= FINAL_EPOCH)
        final_epoch = FINAL_EPOCH if FINAL_EPOCH in val else epochs[-1]
        out = dict(zip(("dataset", "model", "method"), key, strict=True))
        out["variant"] = variants[key]
        out |= _pair("final", val[final_epoch])
        out |= {f"final_ours_{k}": v for k, v in mean_interval(_finite(val[final_epoch])).items()}
        out |= _pair("start", val[0])
        forget = _finite(ours["forget_frac_poisoned_label"][key][final_epoch])
        if forget.size:
            out["forget_final_ours"] = float(forget.mean())
        out["epochs"] = len(epochs)
        out["final_epoch"] = final_epoch
        out["nonfinite_runs"] = len(val[final_epoch]) - _finite(val[final_epoch]).size
        comparable = (
            key[2] in PAPER_METHODS
            and variants[key] == "reference"
            and (judged is None or key[1] in judged)
        )
        if comparable and key in paper["val_acc"]:
            pval = paper["val_acc"][key]
            out |= _pair("final", pval[FINAL_EPOCH], "paper")
            out |= _pair("start", pval[0], "paper")
            pforget = paper["forget_frac_poisoned_label"][key]
            out["forget_final_paper"] = float(np.mean(pforget[FINAL_EPOCH]))
            diverged = out["nonfinite_runs"] or "start_ours" not in out
            if diverged:  # no verdict on the runs that happened to converge
                out["not_comparable"] = not_comparable(
                    f"{out['nonfinite_runs']} of {out['final_ours_runs']} runs not finite "
                    "(diverged)"
                )
                table.append(out)
                continue
            out["final_diff"] = out["final_ours"] - out["final_paper"]
            out["final_pass"] = abs(out["final_diff"]) <= FINAL_TOL
            out["start_diff"] = out["start_ours"] - out["start_paper"]
            # retrain starts from a fresh initialisation: its start is a draw, not a checkpoint
            out["start_pass"] = None if key[2] == "retrain" else abs(out["start_diff"]) <= START_TOL
            common = [e for e in epochs if e in pval and _finite(val[e]).size]
            out["curve_mad"] = float(
                np.mean([abs(np.mean(_finite(val[e])) - np.mean(pval[e])) for e in common])
            )
        table.append(out)
    return {"table": table, "ordering": _orderings(table)}


def _method_rank(method: str) -> tuple:
    if method in PAPER_METHODS:
        return PAPER_METHODS.index(method), ""
    return len(PAPER_METHODS), method


def _pair(what: str, values, who: str = "ours") -> dict:
    """Mean (of the finite values) and std (of two or more) as ``<what>_<who>[_std]``, and how
    many values there were (``_runs``)."""
    finite = _finite(values)
    out: dict[str, Any] = {f"{what}_{who}_runs": len(values)}
    if finite.size:
        out[f"{what}_{who}"] = float(finite.mean())
    if finite.size >= 2:
        out[f"{what}_{who}_std"] = float(finite.std())
    return out


def _orderings(table: list[dict]) -> list[dict]:
    """Per (dataset, model): methods by final val acc, ours and the paper's, and the pairs that
    the paper separates by more than ORDER_GAP but we rank the other way. An ordering needs two
    methods set beside the paper; with fewer it is ``not_comparable``."""
    groups = defaultdict(list)
    for r in table:
        if "final_paper" in r:
            groups[(r["dataset"], r["model"])].append(r)
    out = []
    for (dataset, model), rows in sorted(groups.items()):
        by = {r["method"]: r for r in rows if "not_comparable" not in r}
        entry: dict[str, Any] = {"dataset": dataset, "model": model}
        if len(by) < 2:
            entry["not_comparable"] = not_comparable(
                f"{len(by)} method(s) with a finite final beside the paper's: an ordering needs 2"
            )
            out.append(entry)
            continue
        flips = [
            f"{a}>{b}"
            for a in by
            for b in by
            if by[a]["final_paper"] - by[b]["final_paper"] > ORDER_GAP
            and by[a]["final_ours"] <= by[b]["final_ours"]
        ]
        out.append(
            entry
            | {
                "ours": [m for m in sorted(by, key=lambda m: -by[m]["final_ours"])],
                "paper": [m for m in sorted(by, key=lambda m: -by[m]["final_paper"])],
                "same": not flips,
                "violated_paper_pairs": flips,
            }
        )
    return out


def format_unlearning(table: list[dict], ordering: list[dict]) -> str:
    head = (
        f"{'dataset':7} {'model':6} {'method':16} {'variant':9} {'final ours':>12} "
        f"{'[95 % CI]':>14} {'paper':>12} {'diff':>7} pass  {'start ours':>10} {'paper':>6} pass  "
        f"{'curve|d|':>8} {'forget o/p':>11}"
    )
    finals = sorted({r.get("final_epoch", FINAL_EPOCH) for r in table}) or [FINAL_EPOCH]
    lines = [
        f"val acc at epoch {'/'.join(map(str, finals))} (final, |diff| <= {FINAL_TOL}) and "
        f"epoch 0 (start, "
        f"|diff| <= {START_TOL}); curve|d| = mean over epochs of |mean ours - mean paper|; "
        "forget = fraction of D_f still predicted with its poisoned label; [95 % CI] = bootstrap "
        "interval of our mean final over runs",
        head,
    ]
    yn = {True: "yes", False: "NO", None: "-"}
    notes = []
    for r in table:
        has = "final_diff" in r
        final = "-"
        if "final_ours" in r:
            final = _mean_spread(r["final_ours"], r.get("final_ours_std"), "run")
        ci = (
            f"[{r['final_ours_lo']:.3f}, {r['final_ours_hi']:.3f}]" if "final_ours_lo" in r else "-"
        )
        pfinal = f"{r['final_paper']:.3f}±{r['final_paper_std']:.3f}" if has else "-"
        diff = f"{r['final_diff']:+.3f}" if has else "-"
        pstart = f"{r['start_paper']:.3f}" if has else "-"
        mad = f"{r['curve_mad']:.3f}" if "curve_mad" in r else "-"
        forget = (f"{r['forget_final_ours']:.2f}" if "forget_final_ours" in r else "-") + "/"
        forget += f"{r['forget_final_paper']:.2f}" if has else "-"
        start = f"{r['start_ours']:.3f}" if "start_ours" in r else "-"
        lines.append(
            f"{r['dataset']:7} {r['model']:6} {r['method']:16} {r['variant']:9} {final:>12} "
            f"{ci:>14} {pfinal:>12} {diff:>7} {yn[r.get('final_pass')]:4}  "
            f"{start:>10} {pstart:>6} {yn[r.get('start_pass')]:4}  {mad:>8} "
            f"{forget:>11}"
        )
        if "not_comparable" in r:
            notes.append(f"{r['dataset']} {r['model']} {r['method']}: {r['not_comparable']}")
        elif r["nonfinite_runs"]:
            notes.append(
                f"{r['dataset']} {r['model']} {r['method']}: {r['nonfinite_runs']} of "
                f"{r['final_ours_runs']} runs not finite (diverged), left out"
            )
    lines += notes
    for o in ordering:
        if "not_comparable" in o:
            lines.append(f"ordering {o['dataset']} {o['model']}: {o['not_comparable']}")
            continue
        lines.append(
            f"ordering {o['dataset']} {o['model']}: ours {' > '.join(o['ours'])}; paper "
            f"{' > '.join(o['paper'])}: "
            + ("consistent" if o["same"] else f"DIFFERS on {', '.join(o['violated_paper_pairs'])}")
        )
    return "\n".join(lines)


def _compare_unlearning_dir(
    results_dir: Path, results: list[dict], manifest: dict, tables=None
) -> dict:
    check = protocol_check(manifest["config"])
    judged = {t for t, d in check["differences"].items() if not d}
    out = compare_unlearning(results, {t: k for t, k in check["kinds"].items() if k}, judged)
    table = out["table"]
    fields = list(dict.fromkeys(k for r in table for k in r))
    _write_compare_csv(results_dir / "compare.csv", table, fields)
    compared = [r for r in table if "final_pass" in r]
    starts = [r for r in compared if r["start_pass"] is not None]
    summary = {
        "cells": len(compared),
        "final_passed": sum(r["final_pass"] for r in compared),
        "start_checked": len(starts),
        "start_passed": sum(r["start_pass"] for r in starts),
        "not_comparable": sum("not_comparable" in r for r in table),
        "ordering": out["ordering"],
    }
    atomic_write_text(results_dir / "compare.json", json.dumps(summary, indent=2))
    text = request_line(manifest["config"]) + format_unlearning(table, out["ordering"])
    text += (
        f"\n\nfinal val acc: passed {summary['final_passed']}/{summary['cells']}; "
        f"start: passed {summary['start_passed']}/{summary['start_checked']}"
        + (f"; {summary['not_comparable']} not comparable" if summary["not_comparable"] else "")
    )
    timings = manifest.get("timings", {})
    if timings:
        text += (
            "\nwall time (s; all runs of a cell in one vmap; * = includes compilation) and "
            "optimizer steps per run:"
        )
        for cell, t in sorted(timings.items()):
            mark = "*" if t.get("includes_compile") else " "
            text += f"\n  {cell:34} {t['seconds']:9.1f}{mark} {t.get('optimizer_steps', '-'):>6}"
    if not table:
        text = "no unlearning trajectories here (a sweep-only run?): nothing to compare"
    return {"table": table, "summary": summary, "text": text}


COMPARATORS["unlearning"] = _compare_unlearning_dir


# --------------------------------------------------------------------------- roughening (§5)

# Published values of the reference notebook (protocol §5): ratio = noisy trace / mean clean trace,
# mean ± std over 5 seeds.
ROUGHENING_REFERENCE = {
    ("qnn", 0.2): (0.961, 0.075),
    ("qnn", 0.3): (0.737, 0.057),
    ("qnn", 0.4): (0.508, 0.045),
    ("mlp", 0.2): (88.5, 61.2),
    ("mlp", 0.3): (94.7, 44.1),
    ("mlp", 0.4): (179.4, 63.7),
}
ROUGHENING_CLEAN_MEAN = {"qnn": 6.19, "mlp": 0.194}


NOTEBOOK_COLLAPSE = (0.25, 0.01)  # the notebook drops traces with |trace - 0.25| < 0.01
RATIO_RESAMPLES = 2000


def mean_interval(values, *, resamples: int = RATIO_RESAMPLES, seed=0) -> dict[str, float]:
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


def ratio_intervals(noisy, clean, *, same_seeds: bool, resamples: int = RATIO_RESAMPLES, seed=0):
    """Bootstrap 95 % intervals of the median and mean trace ratio noisy / mean(clean): seeds are
    resampled with replacement, the clean seeds too (the denominator is an estimate); for the
    clean row itself (``same_seeds``) one resample serves both. Returns {median_lo, median_hi,
    mean_lo, mean_hi}; {} with fewer than 2 seeds."""
    noisy, clean = np.asarray(noisy, float), np.asarray(clean, float)
    if len(noisy) < 2 or len(clean) < 2:
        return {}
    rng = np.random.default_rng(seed)
    pick = rng.integers(0, len(noisy), (resamples, len(noisy)))
    picked_clean = clean[pick] if same_seeds else clean[rng.integers(0, len(clean), pick.shape)]
    ratios = noisy[pick] / picked_clean.mean(axis=1, keepdims=True)
    out: dict[str, float] = {}
    for name, stat in (("median", np.median), ("mean", np.mean)):
        lo, hi = np.percentile(stat(ratios, axis=1), [2.5, 97.5])
        out |= {f"{name}_lo": float(lo), f"{name}_hi": float(hi)}
    return out


def _kept_by_notebook_filter(values: np.ndarray) -> np.ndarray:
    centre, tol = NOTEBOOK_COLLAPSE
    return ~(np.abs(values - centre) < tol)


def _clean_baseline(traces: dict, model: str) -> tuple[np.ndarray, str | None]:
    """(finite clean traces of ``model``, why no ratio can be formed or None): a ratio needs a
    clean run (noise ratio 0) with a finite, positive mean trace."""
    if (model, 0.0) not in traces:
        return np.array([]), "no clean run (noise ratio 0) to divide by: add 0.0 to noise_ratios"
    clean = _finite(list(traces[(model, 0.0)].values()))
    if not clean.size:
        return clean, "no finite clean trace (noise ratio 0) to divide by"
    if clean.mean() <= 0:
        return clean, (
            f"the clean mean trace {clean.mean():.3g} is not positive: a ratio to it has no "
            "direction"
        )
    return clean, None


def compare_roughening(results: list[dict], model_kinds: dict[str, str]) -> list[dict]:
    """Trace ratios per (model, noise ratio) against the notebook's. Collapsed runs stay in the
    mean and are counted; ``*_excl_collapsed`` repeats the statistics without them. Each row has
    the per-seed ``ratios``, their median, and bootstrap 95 % intervals of median and mean
    (:func:`ratio_intervals`); ``*_notebook_filter`` repeats mean and median after the notebook's
    own filter (every trace, clean ones included, with |trace - 0.25| < 0.01 dropped).

    Seeds whose trace is not finite (diverged) are counted in ``nonfinite`` and left out. A row
    without a usable clean baseline or without a finite trace has no ratio, no spread and no
    direction, only ``not_comparable`` (why); ``ratio_std`` needs two seeds."""
    traces: defaultdict[tuple[str, float], dict[str, float]] = defaultdict(dict)  # by seed
    collapsed: defaultdict[tuple[str, float], dict[str, bool]] = defaultdict(dict)
    for r in results:
        key = (r["model"], round(float(r["noise_ratio"]), 3))
        if r["metric"] == "trace":
            traces[key][r["seed"]] = float(r["value"])
        elif r["metric"] == "collapsed":
            collapsed[key][r["seed"]] = float(r["value"]) > 0.5
    table = []
    for model in sorted({k[0] for k in traces}):
        clean, missing = _clean_baseline(traces, model)
        kind = "qnn" if model_kinds.get(model, model).startswith("qnn") else "mlp"
        for (m, ratio), by_seed in sorted(traces.items()):
            if m != model:
                continue
            seeds = sorted(by_seed)
            raw = np.array([by_seed[s] for s in seeds])
            finite = np.isfinite(raw)
            flags = np.array([collapsed[(m, ratio)].get(s, False) for s in seeds])[finite]
            raw = raw[finite]
            row: dict[str, Any] = {
                "model": model,
                "noise_ratio": ratio,
                "runs": len(seeds),
                "nonfinite": int((~finite).sum()),
                "collapsed": int(flags.sum()),
                "paper_clean_trace_mean": ROUGHENING_CLEAN_MEAN[kind],
            }
            if (kind, ratio) in ROUGHENING_REFERENCE:
                pm, ps = ROUGHENING_REFERENCE[(kind, ratio)]
                row |= {"paper_ratio_mean": pm, "paper_ratio_std": ps}
            why = missing or (None if raw.size else f"no finite trace at noise ratio {ratio}")
            if why is not None:
                table.append(row | {"not_comparable": not_comparable(why)})
                continue
            vals = raw / clean.mean()
            row |= {"clean_trace_mean": float(clean.mean()), "ratio_mean": float(vals.mean())}
            if len(vals) >= 2:  # a spread needs two seeds
                row["ratio_std"] = float(vals.std())
            if (~flags).any():
                row["ratio_mean_excl_collapsed"] = float(vals[~flags].mean())
            row["ratios"] = [float(v) for v in vals]
            row["ratio_median"] = float(np.median(vals))
            bounds = ratio_intervals(raw, clean, same_seeds=ratio == 0.0)
            row |= {f"ratio_{k}": v for k, v in bounds.items()}
            kept_clean = clean[_kept_by_notebook_filter(clean)]
            kept = raw[_kept_by_notebook_filter(raw)]
            row["dropped_notebook_filter"] = int(len(raw) - len(kept))
            if kept.size and kept_clean.size and kept_clean.mean() > 0:
                filtered = kept / kept_clean.mean()
                row["ratio_mean_notebook_filter"] = float(filtered.mean())
                row["ratio_median_notebook_filter"] = float(np.median(filtered))
            if "paper_ratio_mean" in row:
                pm = row["paper_ratio_mean"]
                row["same_direction"] = (row["ratio_mean"] - 1) * (pm - 1) > 0
                if row["ratio_mean"] > 0:  # an order of magnitude of a negative ratio: none
                    row["same_order_of_magnitude"] = bool(abs(np.log10(row["ratio_mean"] / pm)) < 1)
            table.append(row)
    return table


def _compare_roughening_dir(
    results_dir: Path, results: list[dict], manifest: dict, tables=None
) -> dict:
    kinds = {name: spec["model"] for name, spec in manifest["config"]["models"].items()}
    table = compare_roughening(results, kinds)
    fields = [
        "model",
        "noise_ratio",
        "ratio_mean",
        "ratio_std",
        "runs",
        "collapsed",
        "ratio_mean_excl_collapsed",
        "ratio_median",
        "ratio_median_lo",
        "ratio_median_hi",
        "ratio_mean_lo",
        "ratio_mean_hi",
        "dropped_notebook_filter",
        "ratio_mean_notebook_filter",
        "ratio_median_notebook_filter",
        "clean_trace_mean",
        "paper_ratio_mean",
        "paper_ratio_std",
        "paper_clean_trace_mean",
        "same_direction",
        "same_order_of_magnitude",
        "nonfinite",
        "not_comparable",
    ]
    _write_compare_csv(results_dir / "compare.csv", table, fields)
    text = [
        f"{'model':6} {'r':>4} {'ratio (ours)':>16} {'ratio (paper)':>16} {'collapsed':>9} "
        f"{'clean trace ours/paper':>24} direction"
    ]
    for r in table:
        paper = (
            f"{r['paper_ratio_mean']:.3f}±{r['paper_ratio_std']:.3f}"
            if "paper_ratio_mean" in r
            else "-"
        )
        if "not_comparable" in r:
            text.append(f"{r['model']:6} {r['noise_ratio']:4.2f} {r['not_comparable']}")
            continue
        clean = f"{r['clean_trace_mean']:.3f}/{r['paper_clean_trace_mean']:.3f}"
        direction: dict[bool | None, str] = {True: "same", False: "OPPOSITE"}
        same = direction.get(r.get("same_direction"), "-")
        text.append(
            f"{r['model']:6} {r['noise_ratio']:4.2f} "
            f"{_mean_spread(r['ratio_mean'], r.get('ratio_std'), 'seed'):>16} "
            f"{paper:>16} {r['collapsed']:>5}/{r['runs']:<3} {clean:>24} {same}"
        )
    text.append(
        "\nper-seed spread: median and mean trace ratio with bootstrap 95 % intervals (seeds "
        "resampled, clean seeds too); notebook filter: traces with |trace - 0.25| < 0.01 dropped "
        "(clean ones too), as the reference notebook does"
    )
    for r in table:
        if "not_comparable" in r:
            continue
        paper = f"{r['paper_ratio_mean']:.3f}" if "paper_ratio_mean" in r else "-"
        filtered = (
            f"mean {r['ratio_mean_notebook_filter']:.3f}, median "
            f"{r['ratio_median_notebook_filter']:.3f}"
            if "ratio_mean_notebook_filter" in r
            else "nothing left"
        )
        text.append(
            f"{r['model']:6} {r['noise_ratio']:4.2f} median {r['ratio_median']:.3f}"
            f"{_ci(r, 'ratio_median')}, mean {r['ratio_mean']:.3f}{_ci(r, 'ratio_mean')} "
            f"(paper mean {paper}, {r['runs'] - r['nonfinite']} seeds"
            + (f", {r['nonfinite']} not finite, left out" if r["nonfinite"] else "")
            + f"); notebook filter drops {r['dropped_notebook_filter']}: {filtered}"
        )
    return {"table": table, "text": "\n".join(text)}


def _ci(row: dict, name: str) -> str:
    lo, hi = row.get(f"{name}_lo"), row.get(f"{name}_hi")
    return "" if lo is None else f" [{lo:.3f}, {hi:.3f}]"


COMPARATORS["roughening"] = _compare_roughening_dir


# --------------------------------------------------------------------------- evaluation (beyond)

EVALUATION_COLUMNS = (  # (header, split, metric, format)
    ("KLoM f P50", "forget", "klom_p50", ".3f"),
    ("f P95", "forget", "klom_p95", ".3f"),
    ("r P50", "retain", "klom_p50", ".3f"),
    ("v P50", "val", "klom_p50", ".3f"),
    ("v P95", "val", "klom_p95", ".3f"),
    ("resid", "forget", "residual", "+.2f"),
    ("MIA AUC", "forget", "mia_loss_auc_mean", ".3f"),
    ("LiRA AUC", "forget", "ulira_auc", ".3f"),
    ("TPR@1%", "forget", "ulira_tpr_at_1pct_fpr", ".3f"),
    ("ident", "forget", "ulira_identified_frac", ".2f"),
    ("val acc", "val", "acc_true_mean", ".3f"),
    ("±", "val", "acc_true_std", ".3f"),
    ("flip", "val", "flip_rate", ".3f"),
    ("seed share", "val", "margin_var_share_training_seed", ".2f"),
)
# shown only where a result has them (a forget request with a clean reference)
RECOVERY_COLUMNS = (
    ("clean KLoM f", "forget", "clean_klom_p50", ".3f"),
    ("recov", "val", "recovery_mean", "+.2f"),
    ("±", "val", "recovery_std", ".2f"),
)
GROUP_ORDER = ("oracle", "oracle_half", "oracle_null", "clean_oracle", "retrain", "teacher")


def evaluation_scores(results: list[dict]) -> dict:
    """{(model, group): {(split, metric): value}} of an evaluation's ``results.csv``, with the
    ``residual`` of every group: (its forget KLoM P50 − retrain's) / (the teacher's − retrain's),
    0 = as close to the oracles as fresh oracles are, 1 = as far as no unlearning at all."""
    scores: defaultdict[tuple[str, str], dict[tuple[str, str], float]] = defaultdict(dict)
    for r in results:
        scores[(r["model"], r["group"])][(r["split"], r["metric"])] = float(r["value"])
        scores[(r["model"], r["group"])][("", "models")] = int(r["models"])
        scores[(r["model"], r["group"])][("", "oracles")] = int(r["oracles"])
    key = ("forget", "klom_p50")
    for (model, _group), s in scores.items():
        ref, teacher = scores.get((model, "retrain")), scores.get((model, "teacher"))
        ends = [g.get(key, math.nan) for g in (s, ref or {}, teacher or {})]
        if all(map(math.isfinite, ends)) and ends[2] != ends[1]:
            s[("forget", "residual")] = (ends[0] - ends[1]) / (ends[2] - ends[1])
    return dict(scores)


def _group_rank(group: str) -> tuple:
    return (GROUP_ORDER.index(group) if group in GROUP_ORDER else len(GROUP_ORDER), group)


def format_evaluation(scores: dict) -> str:
    present = {key for s in scores.values() for key in s}
    columns = EVALUATION_COLUMNS + tuple(c for c in RECOVERY_COLUMNS if (c[1], c[2]) in present)
    header = f"{'model':6} {'group':16} {'n':>4} " + " ".join(
        f"{h:>{max(len(h), 6)}}" for h, *_ in columns
    )
    lines = [header]
    for model, group in sorted(scores, key=lambda k: (k[0], _group_rank(k[1]))):
        s = scores[(model, group)]
        cells = []
        for h, split, metric, fmt in columns:
            v = s.get((split, metric))
            shown = "-" if v is None else format(v, fmt) if math.isfinite(v) else "n/a"
            cells.append(f"{shown:>{max(len(h), 6)}}")
        lines.append(f"{model:6} {group:16} {s[('', 'models')]:>4} " + " ".join(cells))
    missing = sorted(
        {
            (model, group)
            for (model, group), s in scores.items()
            for (split, _), v in s.items()
            if split and not math.isfinite(v)
        }
    )
    lines += [
        f"{model} {group}: " + not_comparable("values not finite (diverged models), shown n/a")
        for model, group in missing
    ]
    return "\n".join(lines)


def evaluation_findings(scores: dict) -> list[str]:
    """Calibration per model, and per method which model ends closer to its oracles."""
    lines = []
    models = sorted({m for m, _ in scores})
    for model in models:
        get = {g: s for (m, g), s in scores.items() if m == model}
        d = {g: s.get(("forget", "klom_p50"), math.nan) for g, s in get.items()}
        k = next(iter(get.values()))[("", "oracles")]
        calibration = ("oracle_half", "retrain", "teacher")
        lacking = [g for g in calibration if not math.isfinite(d.get(g, math.nan))]
        if lacking:
            lines.append(
                f"calibration {model}: "
                + not_comparable(
                    f"no finite forget KLoM P50 of {', '.join(lacking)}"
                    + (" (list retrain in methods)" if "retrain" in lacking else "")
                )
            )
        else:
            ok = d["oracle_half"] < d["teacher"] and d["retrain"] < d["teacher"]
            lines.append(
                f"calibration {model} (K = {k} oracles): forget KLoM P50 oracle halves "
                f"{d['oracle_half']:.3f}, retrain {d['retrain']:.3f}, teacher "
                f"{d['teacher']:.3f}: {'ok' if ok else 'NOT separated: raise K or the ensembles'}"
            )
        null = get.get("oracle_null", {})
        band = {
            key: (null[(split, f"{metric}_lo")], null[(split, f"{metric}_hi")])
            for key, (split, metric) in {
                "klom": ("forget", "klom_p50"),
                "auc": ("forget", "ulira_auc"),
            }.items()
            if (split, f"{metric}_lo") in null
        }
        if len(band) < 2 or not all(math.isfinite(v) for b in band.values() for v in b):
            lines.append(f"null band {model}: " + not_comparable("no finite oracle_null band"))
        else:
            judged = {g: d[g] for g in get if g not in GROUP_ORDER and math.isfinite(d[g])}
            outside = [g for g, v in judged.items() if not band["klom"][0] <= v <= band["klom"][1]]
            lines.append(
                f"null band {model} (oracles posing as a group, 20 draws, 95 %): forget KLoM P50 "
                f"[{band['klom'][0]:.3f}, {band['klom'][1]:.3f}], LiRA AUC "
                f"[{band['auc'][0]:.3f}, {band['auc'][1]:.3f}]; outside it on KLoM: "
                + (", ".join(sorted(outside)) or "none")
            )
    methods = sorted({g for _, g in scores} - set(GROUP_ORDER))
    for method in methods:
        resid = {
            m: scores[(m, method)].get(("forget", "residual"))
            for m in models
            if (m, method) in scores
        }
        auc = {m: scores[(m, method)].get(("forget", "ulira_auc")) for m in resid}
        if len(resid) > 1 and None in resid.values():
            lines.append(
                f"{method}: "
                + not_comparable(
                    "no residual distance of "
                    + ", ".join(m for m, v in resid.items() if v is None)
                    + " (it needs finite retrain and teacher KLoM)"
                )
            )
        elif len(resid) > 1:
            closest = min(resid, key=lambda m: resid[m])
            lines.append(
                f"{method}: residual distance "
                + ", ".join(f"{m} {v:+.2f}" for m, v in resid.items())
                + "; U-LiRA AUC "
                + ", ".join(f"{m} {_fmt(v)}" for m, v in auc.items())
                + f" -> {closest} ends closer to its oracles"
            )
    return lines


def _cell_seconds(timings: dict, model: str, group: str) -> tuple[float, bool] | None:
    """(seconds of its runs, includes a compilation) of an evaluation's ensemble cell
    ``<model>__<group>`` as the manifest records them; None where they are not (a run made
    before ``run_seconds`` was recorded: its cell's wall time includes compilations that are
    not the method's cost). Runs that record ``compile_seconds`` compiled apart from the runs."""
    t = timings.get(f"{model}__{group}")
    if not isinstance(t, dict) or not isinstance(t.get("run_seconds"), int | float):
        return None
    return float(t["run_seconds"]), bool(t.get("includes_compile")) and "compile_seconds" not in t


def evaluation_leaderboard(
    results: list[dict], bootstrap: list[dict], manifest: dict
) -> list[dict]:
    """The leaderboard rows (:mod:`qunlearn.leaderboard`) of an evaluation's ``results.csv``
    and ``bootstrap.csv`` rows, with the manifest's cell timings; one block per forget request
    (a ``forget`` column, else the config's ``forget``, else "poison")."""
    from qunlearn import leaderboard

    named = manifest["config"].get("forget")
    default = named if isinstance(named, str) else leaderboard.DEFAULT_FORGET

    def forget_of(row: dict) -> str:
        return row.get("forget") or default

    resampled = leaderboard.resamples_by_group(bootstrap, forget_of)
    timings = manifest.get("timings", {}) or {}
    rows = []
    for forget in dict.fromkeys(map(forget_of, results)):
        scores = evaluation_scores([r for r in results if forget_of(r) == forget])
        seconds = {key: _cell_seconds(timings, *key) for key in scores}
        rows += leaderboard.leaderboard_rows(
            scores,
            {(m, g): v for (f, m, g), v in resampled.items() if f == forget},
            {key: s for key, s in seconds.items() if s is not None},
            forget=forget,
        )
    return rows


EXACT_READOUT = "exact"
READOUT_NAME = re.compile(r"(?:shots(?P<shots>\d+)|noise_(?P<noise>[a-z0-9_]+))$")


def readout_label(readout: str) -> str:
    """``shots100`` -> ``S=100``, ``noise_torino`` -> ``noise torino``, ``exact`` as it is."""
    m = READOUT_NAME.match(readout)
    if m is None:
        return readout
    return f"S={m['shots']}" if m["shots"] else f"noise {m['noise']}"


def readout_rank(readout: str) -> tuple:
    """The order readouts are shown in: shots by count, the exact readout (S = inf), then the
    noise models by name."""
    m = READOUT_NAME.match(readout)
    if m is None:
        return (1, 0, readout)
    return (0, int(m["shots"]), "") if m["shots"] else (2, 0, m["noise"])


def by_readout(rows: list[dict]) -> dict[str, list[dict]]:
    """{readout: its rows without the ``readout`` column} of an evaluation's table, the exact
    readout first (all rows of a run without readouts are exact)."""
    found: defaultdict[str, list[dict]] = defaultdict(list)
    for r in rows:
        found[r.get("readout") or EXACT_READOUT].append(
            {k: v for k, v in r.items() if k != "readout"}
        )
    order = sorted(found, key=lambda k: (k != EXACT_READOUT, readout_rank(k)))
    return {k: found[k] for k in order}


# the readouts summary: (header, split, statistic, format); split "" = a leaderboard statistic
# with its bootstrap interval, else a results.csv metric of that split (with a null band's _lo
# and _hi where it has them)
READOUT_COLUMNS = (
    ("KLoM f P50", "forget", "klom_p50", ".3f"),
    ("f P95", "forget", "klom_p95", ".3f"),
    ("resid", "", "resid", "+.2f"),
    ("LiRA AUC", "forget", "ulira_auc", ".3f"),
    ("TPR@1%", "", "ulira_tpr_at_1pct_fpr", ".3f"),
    ("MIA AUC", "forget", "mia_loss_auc_mean", ".3f"),
    ("val acc", "", "val_acc", ".3f"),
)


def readout_summary(results: list[dict], bootstrap: list[dict], manifest: dict) -> list[dict]:
    """One row per (model, readout, group) of an evaluation with readouts: the key scores of
    every readout, the leaderboard's statistics with their 95 % bootstrap intervals, and the
    oracle null band of the forget KLoM P50 and U-LiRA AUC; [] without readouts."""
    results_by, boot_by = by_readout(results), by_readout(bootstrap)
    if list(results_by) == [EXACT_READOUT]:
        return []
    out = []
    for readout, rows in results_by.items():
        scores = evaluation_scores(rows)
        board = evaluation_leaderboard(rows, boot_by.get(readout, []), manifest)
        boards = {(r["model"], r["method"]): r for r in board}
        for model, group in sorted(scores, key=lambda k: (k[0], _group_rank(k[1]))):
            if (model, group) not in boards and group != "oracle_null":
                continue
            s, b = scores[(model, group)], boards.get((model, group), {})
            row = {"model": model, "readout": readout, "group": group}
            for _, split, stat, _ in READOUT_COLUMNS:
                if split:
                    row[stat] = s.get((split, stat))
                    for end in ("_lo", "_hi"):
                        if (split, stat + end) in s:
                            row[stat + end] = s[(split, stat + end)]
                else:
                    row |= {stat + end: b.get(stat + end) for end in ("", "_lo", "_hi")}
            out.append(row)
    return out


def format_readout_summary(rows: list[dict]) -> str:
    """The readouts summary as text: per model and group, one line per readout."""
    lines = [
        "readouts (eval_shots, eval_circuit_noise: the same params read out with S shots per "
        "example or under a circuit-noise model; [ ]: 95 % bootstrap over the teachers, or the "
        "oracle null band):",
        f"{'model':6} {'group':16} {'readout':14} "
        + " ".join(f"{h:>20}" for h, *_ in READOUT_COLUMNS),
    ]
    groups = sorted(
        {(r["model"], r["group"]) for r in rows}, key=lambda k: (k[0], _group_rank(k[1]))
    )
    for model, group in groups:
        for r in sorted(
            (r for r in rows if (r["model"], r["group"]) == (model, group)),
            key=lambda r: readout_rank(r["readout"]),
        ):
            cells = []
            for _, _, stat, fmt in READOUT_COLUMNS:
                v, lo, hi = r.get(stat), r.get(f"{stat}_lo"), r.get(f"{stat}_hi")
                text = "-" if v is None else format(v, fmt) if math.isfinite(v) else "n/a"
                if lo is not None and hi is not None and math.isfinite(lo) and math.isfinite(hi):
                    text += f" [{lo:{fmt}},{hi:{fmt}}]"
                cells.append(f"{text:>20}")
            lines.append(
                f"{model:6} {group:16} {readout_label(r['readout']):14} " + " ".join(cells)
            )
    return "\n".join(lines)


def _compare_evaluation_dir(
    results_dir: Path, results: list[dict], manifest: dict, tables=None
) -> dict:
    from qunlearn.leaderboard import COLUMNS, format_leaderboard

    bootstrap = tables("bootstrap.csv") if tables else []
    results_by = by_readout(results) or {EXACT_READOUT: []}
    boot_by = by_readout(bootstrap)
    exact = results_by[EXACT_READOUT]
    exact_findings: list[str] = []
    board = evaluation_leaderboard(exact, boot_by.get(EXACT_READOUT, []), manifest)
    _write_compare_csv(results_dir / "leaderboard.csv", board, list(COLUMNS))
    tagged = any("readout" in r for r in results)
    table, texts, readouts = [], [], {}
    for readout, rows in results_by.items():
        scores = evaluation_scores(rows)
        table += [
            {"model": m, "group": g}
            | ({"readout": readout} if tagged else {})
            | {"split": split, "metric": metric}
            | (
                {"value": v}
                if math.isfinite(v)
                else {"not_comparable": not_comparable("not finite")}
            )
            for (m, g), s in sorted(scores.items())
            for (split, metric), v in sorted(s.items())
            if split
        ]
        findings = evaluation_findings(scores)
        if readout == EXACT_READOUT:
            exact_findings = findings
            texts.append(format_evaluation(scores) + "\n\n" + "\n".join(findings) + "\n")
        else:
            readouts[readout] = {"findings": findings}
            texts.append(
                f"\nreadout {readout_label(readout)} (the same params, every probe read out so):\n"
                + format_evaluation(scores)
                + "\n\n"
                + "\n".join(findings)
                + "\n"
            )
    fields = ["model", "group", *(["readout"] if tagged else []), "split", "metric"]
    _write_compare_csv(results_dir / "compare.csv", table, [*fields, "value", "not_comparable"])
    summary: dict[str, Any] = {"findings": exact_findings, "leaderboard": board}
    across = readout_summary(results, bootstrap, manifest)
    if readouts:
        summary["readouts"] = readouts | {"summary": across}
    atomic_write_text(results_dir / "compare.json", json.dumps(summary, indent=2))
    text = (
        "evaluation against retrain oracles (beyond the paper: no published numbers). KLoM: "
        "per-example histogram KL of margins vs the oracles (f/r/v = forget/retain/val); resid: "
        "(forget P50 - retrain's) / (teacher's - retrain's); MIA: loss attack, forget vs "
        "non-members with flipped labels; LiRA: per-example likelihood-ratio attack on D_f; "
        "ident: forget examples still identified at 5 % FPR; flip: pairwise prediction flip "
        "rate; seed share: share of the margin variance due to the training seed\n"
    )
    if any(("val", "recovery_gap") in s for s in evaluation_scores(exact).values()):
        text += (
            "clean KLoM: forget P50 vs the clean oracles (retrained on D minus all poison); "
            "recov: clean val accuracy recovered, (acc - teachers') / (clean oracles' - "
            "teachers'), mean and std over models\n"
        )
    if manifest["config"].get("forget") in ("clean_random", "class"):
        text = text.replace("with flipped labels", "with true labels (D_f is clean)")
    text = request_line(manifest["config"]) + text
    text += texts[0] + class_deletion_lines(evaluation_scores(exact))
    text += "\n" + format_leaderboard(board) + "\n"
    if readouts:
        text += "".join(texts[1:]) + "\n" + format_readout_summary(across) + "\n"
    return {"table": table, "summary": summary, "text": text}


def class_deletion_lines(scores: dict) -> str:
    """A class deletion's validation accuracy on the deleted class and on the kept ones, per
    model and group (mean over the group's models); "" for other requests."""
    rows = [
        f"{model:<6} {group:<18} {s[(split, 'acc_true_mean')]:.3f}"
        f" {s[('val_kept_classes', 'acc_true_mean')]:.3f}"
        for (model, group), s in sorted(scores.items())
        for split in ("val_deleted_class",)
        if (split, "acc_true_mean") in s
    ]
    if not rows:
        return ""
    head = (
        "\nclass deletion, validation accuracy (mean over the group's models): the deleted "
        "class (0 = forgotten: never predicted) and the kept classes\n"
        f"{'model':<6} {'group':<18} deleted kept\n"
    )
    return head + "\n".join(rows) + "\n"


COMPARATORS["evaluation"] = _compare_evaluation_dir
COMPARE_FILES["evaluation"] = ("leaderboard.csv",)
