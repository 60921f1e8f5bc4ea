"""The evaluation kind (beyond the paper): oracle-judged scores, the leaderboard, the
readouts and a class deletion's accuracies."""

from __future__ import annotations

import json
import math
import re
from collections import defaultdict
from pathlib import Path
from typing import Any

from qunlearn.atomic import atomic_write_text
from qunlearn.compare.common import _fmt, _write_compare_csv, not_comparable
from qunlearn.compare.paper import request_line

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


def _certificates(config: dict, rows: list[dict]) -> dict:
    """{(model, group): the leaderboard's certificate columns} of every certified_newton
    ensemble: ``rows`` are certificate.csv's; whether the loss allows one is the config's."""
    from qunlearn import leaderboard
    from qunlearn.surgery import certificate_gap
    from qunlearn.unlearn import method_defaults

    name = leaderboard.CERTIFIED
    if name not in config.get("methods", ()):
        return {}
    options = method_defaults(name) | config.get("method_options", {}).get(name, {})
    return {
        (model, name): leaderboard.certificate(
            [r for r in rows if (r["model"], r["group"]) == (model, name)],
            certificate_gap(spec["model"], spec.get("hyper", {}), options["l2"]),
        )
        for model, spec in config.get("models", {}).items()
    }


def evaluation_leaderboard(
    results: list[dict],
    bootstrap: list[dict],
    manifest: dict,
    certificates: list[dict] | None = None,
) -> list[dict]:
    """The leaderboard rows (:mod:`qunlearn.leaderboard`) of an evaluation's ``results.csv``
    and ``bootstrap.csv`` rows, with the manifest's cell timings and certified_newton's
    certificate (``certificates``: certificate.csv's rows); one block per forget request
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
            certificates=_certificates(manifest["config"], certificates or []),
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
    certificates = tables("certificate.csv") if tables else []
    board = evaluation_leaderboard(exact, boot_by.get(EXACT_READOUT, []), manifest, certificates)
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
