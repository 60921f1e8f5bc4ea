"""Put a results table beside the paper's published numbers (``qunlearn/reference/*.csv``).

Statistics match the paper's plots: mean and population std (ddof = 0) over runs. A cell passes when
``|mean_ours - mean_paper| <= max(0.03, 2 * std_paper)``.
"""

from __future__ import annotations

import csv
import json
from collections import defaultdict
from importlib import resources
from pathlib import Path

import numpy as np

from qunlearn.errors import QunlearnError

REFERENCE_SWEEPS = {"mnist": "fig2c_mnist_noise_sweep.csv", "xxz": "fig2d_xxz_noise_sweep.csv"}
SWEEP_METRICS = ("val_acc", "train_acc_noisy_labels")


def read_csv(path) -> list[dict]:
    try:
        with open(path, newline="", encoding="utf-8") as f:
            return list(csv.DictReader(f))
    except (OSError, UnicodeDecodeError, csv.Error) as err:
        raise QunlearnError(f"cannot read table {path} ({type(err).__name__}: "
                            f"{str(err).splitlines()[0] if str(err) else err!r}): rerun the "
                            "experiment that wrote it") from None


def read_results(results_dir: str | Path) -> tuple[dict, list[dict]]:
    """(resolved config, table rows) of a results directory; see :func:`read_manifest_and_table`."""
    manifest, rows = read_manifest_and_table(results_dir)
    return manifest["config"], rows


def read_manifest_and_table(results_dir: str | Path) -> tuple[dict, list[dict]]:
    """(manifest, table rows) of a results directory, or one clear error saying what is missing.
    Both come from JSON and CSV only; the manifest is checked to hold a config."""
    results_dir = Path(results_dir)
    table, manifest_path = results_dir / "results.csv", results_dir / "manifest.json"
    if not results_dir.is_dir():
        raise QunlearnError(f"results directory {results_dir} not found: pass the --out of a "
                            "`qunlearn run`")
    if not table.is_file():
        raise QunlearnError(f"no results.csv in {results_dir}: run `qunlearn run CONFIG --out "
                            f"{results_dir}` first")
    try:
        manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
        manifest["config"]["experiment"], manifest["config"]["name"]
    except FileNotFoundError:
        raise QunlearnError(f"no manifest.json in {results_dir}: it is no qunlearn results "
                            "directory (or was copied without it); rerun the experiment") from None
    except (OSError, ValueError, KeyError, TypeError) as err:  # ValueError: bad JSON, not UTF-8
        raise QunlearnError(f"{manifest_path} is unreadable or holds no config "
                            f"({type(err).__name__}): rerun the experiment") from None
    return manifest, read_csv(table)


def reference_rows(name: str) -> list[dict]:
    return read_csv(resources.files("qunlearn") / "reference" / name)


def _stats(values) -> tuple[float, float, int]:
    v = np.asarray(values, float)
    return float(np.mean(v)), float(np.std(v)), len(v)


def critical_alpha(alphas, accs, threshold: float = 0.5) -> float | None:
    """First alpha where mean validation accuracy crosses ``threshold`` (linearly interpolated)."""
    pairs = sorted(zip(alphas, accs, strict=True))
    for (a0, v0), (a1, v1) in zip(pairs, pairs[1:], strict=False):
        if v0 >= threshold > v1:
            return a0 + (v0 - threshold) * (a1 - a0) / (v0 - v1)
    return None


def compare_sweep(results: list[dict]) -> list[dict]:
    """One row per (dataset, model, noise, alpha, metric) present in ``results``, ours vs paper."""
    ours = defaultdict(list)
    for row in results:
        if row["metric"] in SWEEP_METRICS:
            key = (row["dataset"], row["model"], row["noise"], round(float(row["alpha"]), 3),
                   row["metric"])
            ours[key].append(float(row["value"]))
    paper = defaultdict(list)
    for dataset in {k[0] for k in ours}:
        if dataset not in REFERENCE_SWEEPS:
            continue
        for row in reference_rows(REFERENCE_SWEEPS[dataset]):
            for metric in SWEEP_METRICS:
                key = (row["dataset"], row["model"], row["noise"], round(float(row["alpha"]), 3),
                       metric)
                paper[key].append(float(row[metric]))
    table = []
    for key in sorted(ours):
        mean, std, n = _stats(ours[key])
        out = dict(zip(("dataset", "model", "noise", "alpha", "metric"), key, strict=True))
        out |= {"ours_mean": mean, "ours_std": std, "ours_runs": n}
        if key in paper:
            pmean, pstd, pn = _stats(paper[key])
            tol = max(0.03, 2 * pstd)
            out |= {"paper_mean": pmean, "paper_std": pstd, "paper_runs": pn,
                    "diff": mean - pmean, "tolerance": tol, "pass": abs(mean - pmean) <= tol}
        table.append(out)
    return table


def critical_alphas(table: list[dict]) -> list[dict]:
    """alpha_c (val accuracy crossing 0.5) per (dataset, model, noise), ours and the paper's."""
    groups = defaultdict(list)
    for row in table:
        if row["metric"] == "val_acc":
            groups[(row["dataset"], row["model"], row["noise"])].append(row)
    out = []
    for (dataset, model, noise), rows in sorted(groups.items()):
        alphas = [r["alpha"] for r in rows]
        entry = {"dataset": dataset, "model": model, "noise": noise,
                 "alpha_c_ours": critical_alpha(alphas, [r["ours_mean"] for r in rows])}
        if all("paper_mean" in r for r in rows):
            entry["alpha_c_paper"] = critical_alpha(alphas, [r["paper_mean"] for r in rows])
        out.append(entry)
    return out


def format_table(table: list[dict]) -> str:
    lines = [f"{'dataset':7} {'model':5} {'noise':22} {'alpha':>5} {'metric':23} "
             f"{'ours':>14} {'paper':>14} {'diff':>7} pass"]
    for r in table:
        ours = f"{r['ours_mean']:.3f}±{r['ours_std']:.3f}"
        paper = f"{r['paper_mean']:.3f}±{r['paper_std']:.3f}" if "paper_mean" in r else "-"
        diff = f"{r['diff']:+.3f}" if "diff" in r else "-"
        ok = ("yes" if r["pass"] else "NO") if "pass" in r else "-"
        lines.append(f"{r['dataset']:7} {r['model']:5} {r['noise']:22} {r['alpha']:5.2f} "
                     f"{r['metric']:23} {ours:>14} {paper:>14} {diff:>7} {ok}")
    return "\n".join(lines)


def compare_results_dir(results_dir: str | Path) -> dict:
    """Compare ``RESULTS/results.csv``; writes ``compare.csv`` and ``compare.json`` beside it."""
    results_dir = Path(results_dir)
    manifest, rows = read_manifest_and_table(results_dir)
    kind = manifest["config"]["experiment"]
    if kind not in COMPARATORS:
        raise QunlearnError(f"no published numbers to compare a {kind!r} experiment with")
    return COMPARATORS[kind](results_dir, rows, manifest)


def _compare_sweep_dir(results_dir: Path, results: list[dict], manifest: dict) -> dict:
    from qunlearn.atomic import atomic_write_text

    table = compare_sweep(results)
    crit = critical_alphas(table)
    fields = ["dataset", "model", "noise", "alpha", "metric", "ours_mean", "ours_std", "ours_runs",
              "paper_mean", "paper_std", "paper_runs", "diff", "tolerance", "pass"]
    lines = [",".join(fields)] + [",".join(str(r.get(f, "")) for f in fields) for r in table]
    atomic_write_text(results_dir / "compare.csv", "\n".join(lines) + "\n")
    compared = [r for r in table if "pass" in r]
    summary = {"cells": len(compared), "passed": sum(r["pass"] for r in compared),
               "critical_alpha": crit}
    atomic_write_text(results_dir / "compare.json", json.dumps(summary, indent=2))
    text = format_table(table) + "\n\n" + f"passed {summary['passed']}/{summary['cells']} cells\n"
    text += "\n".join(
        f"alpha_c {c['dataset']} {c['model']} {c['noise']}: ours "
        f"{_fmt(c['alpha_c_ours'])}, paper {_fmt(c.get('alpha_c_paper'))}" for c in crit)
    return {"table": table, "summary": summary, "text": text}


def _fmt(x):
    return "-" if x is None else f"{x:.3f}"


COMPARATORS = {"noise_sweep": _compare_sweep_dir}


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
    out = defaultdict(lambda: defaultdict(list))
    for r in rows:
        out[(r["dataset"], r["model"], r["method"])][int(r["epoch"])].append(float(r[metric]))
    return out


def compare_unlearning(results: list[dict], model_kinds: dict[str, str]) -> dict:
    """Our Fig 3 rows (tidy) against the paper's, per (dataset, model, method).

    ``model_kinds`` maps our model names to "mlp" / "qnn" (which reference file). Returns
    {"table": [...], "ordering": [...]}: final (epoch 49) and starting (epoch 0) val acc, mean ± std
    (ddof 0), the mean absolute difference of the mean val-acc curves over epochs 0..49, and
    whether the methods rank the same (pairs the paper separates by more than ORDER_GAP).
    """
    ours = {m: defaultdict(lambda: defaultdict(list)) for m in CURVE_METRICS}
    variants = {}
    for r in results:
        if r["metric"] in CURVE_METRICS:
            key = (r["dataset"], r["model"], r["method"])
            ours[r["metric"]][key][int(r["epoch"])].append(float(r["value"]))
            variants[key] = r["variant"]
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
        out |= _pair("start", val[0])
        forget = ours["forget_frac_poisoned_label"][key]
        out["forget_final_ours"] = float(np.mean(forget[final_epoch]))
        out["epochs"] = len(epochs)
        comparable = key[2] in PAPER_METHODS and variants[key] == "reference"
        if comparable and key in paper["val_acc"]:
            pval = paper["val_acc"][key]
            out |= _pair("final", pval[FINAL_EPOCH], "paper")
            out |= _pair("start", pval[0], "paper")
            pforget = paper["forget_frac_poisoned_label"][key]
            out["forget_final_paper"] = float(np.mean(pforget[FINAL_EPOCH]))
            out["final_diff"] = out["final_ours"] - out["final_paper"]
            out["final_pass"] = abs(out["final_diff"]) <= FINAL_TOL
            out["start_diff"] = out["start_ours"] - out["start_paper"]
            # retrain starts from a fresh initialisation: its start is a draw, not a checkpoint
            out["start_pass"] = None if key[2] == "retrain" else abs(out["start_diff"]) <= START_TOL
            common = [e for e in epochs if e in pval]
            out["curve_mad"] = float(np.mean([abs(np.mean(val[e]) - np.mean(pval[e]))
                                              for e in common]))
        table.append(out)
    return {"table": table, "ordering": _orderings(table)}


def _method_rank(method: str) -> tuple:
    if method in PAPER_METHODS:
        return PAPER_METHODS.index(method), ""
    return len(PAPER_METHODS), method


def _pair(what: str, values, who: str = "ours") -> dict:
    mean, std, n = _stats(values)
    return {f"{what}_{who}": mean, f"{what}_{who}_std": std, f"{what}_{who}_runs": n}


def _orderings(table: list[dict]) -> list[dict]:
    """Per (dataset, model): methods by final val acc, ours and the paper's, and the pairs that
    the paper separates by more than ORDER_GAP but we rank the other way."""
    groups = defaultdict(list)
    for r in table:
        if "final_paper" in r:
            groups[(r["dataset"], r["model"])].append(r)
    out = []
    for (dataset, model), rows in sorted(groups.items()):
        by = {r["method"]: r for r in rows}
        flips = [f"{a}>{b}" for a in by for b in by
                 if by[a]["final_paper"] - by[b]["final_paper"] > ORDER_GAP
                 and by[a]["final_ours"] <= by[b]["final_ours"]]
        out.append({
            "dataset": dataset, "model": model,
            "ours": [m for m in sorted(by, key=lambda m: -by[m]["final_ours"])],
            "paper": [m for m in sorted(by, key=lambda m: -by[m]["final_paper"])],
            "same": not flips, "violated_paper_pairs": flips,
        })
    return out


def format_unlearning(table: list[dict], ordering: list[dict]) -> str:
    head = (f"{'dataset':7} {'model':6} {'method':16} {'variant':9} {'final ours':>12} "
            f"{'paper':>12} {'diff':>7} pass  {'start ours':>10} {'paper':>6} pass  "
            f"{'curve|d|':>8} {'forget o/p':>11}")
    lines = [f"val acc at epoch {FINAL_EPOCH} (final, |diff| <= {FINAL_TOL}) and epoch 0 (start, "
             f"|diff| <= {START_TOL}); curve|d| = mean over epochs of |mean ours - mean paper|; "
             "forget = fraction of D_f still predicted with its poisoned label", head]
    yn = {True: "yes", False: "NO", None: "-"}
    for r in table:
        has = "final_paper" in r
        final = f"{r['final_ours']:.3f}±{r['final_ours_std']:.3f}"
        pfinal = f"{r['final_paper']:.3f}±{r['final_paper_std']:.3f}" if has else "-"
        diff = f"{r['final_diff']:+.3f}" if has else "-"
        pstart = f"{r['start_paper']:.3f}" if has else "-"
        mad = f"{r['curve_mad']:.3f}" if has else "-"
        forget = f"{r['forget_final_ours']:.2f}/" + (
            f"{r['forget_final_paper']:.2f}" if has else "-")
        lines.append(
            f"{r['dataset']:7} {r['model']:6} {r['method']:16} {r['variant']:9} {final:>12} "
            f"{pfinal:>12} {diff:>7} {yn[r.get('final_pass')]:4}  {r['start_ours']:>10.3f} "
            f"{pstart:>6} {yn[r.get('start_pass')]:4}  {mad:>8} {forget:>11}")
    for o in ordering:
        lines.append(f"ordering {o['dataset']} {o['model']}: ours {' > '.join(o['ours'])}; paper "
                     f"{' > '.join(o['paper'])}: "
                     + ("consistent" if o["same"] else
                        f"DIFFERS on {', '.join(o['violated_paper_pairs'])}"))
    return "\n".join(lines)


def _compare_unlearning_dir(results_dir: Path, results: list[dict], manifest: dict) -> dict:
    from qunlearn.atomic import atomic_write_text

    kinds = {name: spec["model"] for name, spec in manifest["config"]["models"].items()}
    out = compare_unlearning(results, kinds)
    table = out["table"]
    fields = list(dict.fromkeys(k for r in table for k in r))
    lines = [",".join(fields)] + [",".join(str(r.get(f, "")) for f in fields) for r in table]
    atomic_write_text(results_dir / "compare.csv", "\n".join(lines) + "\n")
    compared = [r for r in table if "final_pass" in r]
    starts = [r for r in compared if r["start_pass"] is not None]
    summary = {"cells": len(compared), "final_passed": sum(r["final_pass"] for r in compared),
               "start_checked": len(starts), "start_passed": sum(r["start_pass"] for r in starts),
               "ordering": out["ordering"]}
    atomic_write_text(results_dir / "compare.json", json.dumps(summary, indent=2))
    text = format_unlearning(table, out["ordering"])
    text += (f"\n\nfinal val acc: passed {summary['final_passed']}/{summary['cells']}; "
             f"start: passed {summary['start_passed']}/{summary['start_checked']}")
    timings = manifest.get("timings", {})
    if timings:
        text += ("\nwall time (s; all runs of a cell in one vmap; * = includes compilation) and "
                 "optimizer steps per run:")
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
    ("qnn", 0.2): (0.961, 0.075), ("qnn", 0.3): (0.737, 0.057), ("qnn", 0.4): (0.508, 0.045),
    ("mlp", 0.2): (88.5, 61.2), ("mlp", 0.3): (94.7, 44.1), ("mlp", 0.4): (179.4, 63.7),
}
ROUGHENING_CLEAN_MEAN = {"qnn": 6.19, "mlp": 0.194}


def compare_roughening(results: list[dict], model_kinds: dict[str, str]) -> list[dict]:
    """Trace ratios per (model, noise ratio) against the notebook's. Collapsed runs stay in the
    mean and are counted; ``*_excl_collapsed`` repeats the statistics without them."""
    traces, collapsed = defaultdict(dict), defaultdict(dict)
    for r in results:
        key = (r["model"], round(float(r["noise_ratio"]), 3))
        if r["metric"] == "trace":
            traces[key][r["seed"]] = float(r["value"])
        elif r["metric"] == "collapsed":
            collapsed[key][r["seed"]] = float(r["value"]) > 0.5
    table = []
    for model in sorted({k[0] for k in traces}):
        clean = np.array(list(traces.get((model, 0.0), {}).values()))
        clean_mean = float(np.mean(clean)) if clean.size else float("nan")
        kind = "qnn" if model_kinds.get(model, model).startswith("qnn") else "mlp"
        for (m, ratio), by_seed in sorted(traces.items()):
            if m != model:
                continue
            vals = np.array([by_seed[s] for s in sorted(by_seed)]) / clean_mean
            flags = np.array([collapsed[(m, ratio)].get(s, False) for s in sorted(by_seed)])
            row = {"model": model, "noise_ratio": ratio, "clean_trace_mean": clean_mean,
                   "ratio_mean": float(vals.mean()), "ratio_std": float(vals.std()),
                   "runs": len(vals), "collapsed": int(flags.sum())}
            if (~flags).any():
                row["ratio_mean_excl_collapsed"] = float(vals[~flags].mean())
            row["paper_clean_trace_mean"] = ROUGHENING_CLEAN_MEAN[kind]
            if (kind, ratio) in ROUGHENING_REFERENCE:
                pm, ps = ROUGHENING_REFERENCE[(kind, ratio)]
                row |= {"paper_ratio_mean": pm, "paper_ratio_std": ps,
                        "same_direction": (row["ratio_mean"] - 1) * (pm - 1) > 0,
                        "same_order_of_magnitude": abs(np.log10(row["ratio_mean"] / pm)) < 1}
            table.append(row)
    return table


def _compare_roughening_dir(results_dir: Path, results: list[dict], manifest: dict) -> dict:
    from qunlearn.atomic import atomic_write_text

    kinds = {name: spec["model"] for name, spec in manifest["config"]["models"].items()}
    table = compare_roughening(results, kinds)
    fields = ["model", "noise_ratio", "ratio_mean", "ratio_std", "runs", "collapsed",
              "ratio_mean_excl_collapsed", "clean_trace_mean", "paper_ratio_mean",
              "paper_ratio_std", "paper_clean_trace_mean", "same_direction",
              "same_order_of_magnitude"]
    lines = [",".join(fields)] + [",".join(str(r.get(f, "")) for f in fields) for r in table]
    atomic_write_text(results_dir / "compare.csv", "\n".join(lines) + "\n")
    text = [f"{'model':6} {'r':>4} {'ratio (ours)':>16} {'ratio (paper)':>16} {'collapsed':>9} "
            f"{'clean trace ours/paper':>24} direction"]
    for r in table:
        paper = (f"{r['paper_ratio_mean']:.3f}±{r['paper_ratio_std']:.3f}"
                 if "paper_ratio_mean" in r else "-")
        clean = f"{r['clean_trace_mean']:.3f}/{r.get('paper_clean_trace_mean', float('nan')):.3f}"
        same = {True: "same", False: "OPPOSITE"}.get(r.get("same_direction"), "-")
        text.append(f"{r['model']:6} {r['noise_ratio']:4.2f} "
                    f"{r['ratio_mean']:9.3f}±{r['ratio_std']:<6.3f} {paper:>16} "
                    f"{r['collapsed']:>5}/{r['runs']:<3} {clean:>24} {same}")
    return {"table": table, "text": "\n".join(text)}


COMPARATORS["roughening"] = _compare_roughening_dir
