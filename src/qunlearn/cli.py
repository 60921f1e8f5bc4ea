"""``qunlearn`` command line: a thin shell over the library. Every command has ``--help``."""

from __future__ import annotations

import argparse
import contextlib
import os
import shlex
import signal
import sys
import warnings
from pathlib import Path

from qunlearn.errors import QunlearnError, did_you_mean


def _setup_jax() -> None:
    # JAX flags are set once, at the entry points (here and qunlearn.run), never in the library.
    from qunlearn.api import enable_x64

    enable_x64()


DATA_FIGURES = {  # dataset -> the name of its phase-diagram figure in qunlearn.plotting.data
    "xxz": "xxz_figure",
    "tfim": "tfim_figure",
    "cluster_ising": "cluster_ising_figure",
}


def cmd_data(args) -> None:
    from qunlearn.data import describe, load_dataset
    from qunlearn.plotting.style import SUFFIXES  # the figure formats plotting.data writes

    if args.figure is not None and args.name not in DATA_FIGURES:
        raise QunlearnError(
            f"--figure draws a phase diagram ({', '.join(DATA_FIGURES)}); dataset {args.name!r} "
            "has no figure: drop --figure"
        )
    if args.figure is not None and Path(args.figure).suffix.lower() not in SUFFIXES:
        raise QunlearnError(
            f"--figure {args.figure}: use a file name ending in one of {', '.join(SUFFIXES)}"
        )
    dataset = load_dataset(args.name, cache_dir=args.cache_dir)
    print(describe(dataset))
    if args.name in DATA_FIGURES:
        from qunlearn.plotting import data as data_figures

        figure = getattr(data_figures, DATA_FIGURES[args.name])
        default = Path(dataset.info.get("cache_path", ".")).parent / f"{args.name}.png"
        for written in figure(args.cache_dir, Path(args.figure or default)):
            print(f"figure: {written}")


def cmd_plot_data(args) -> None:
    from qunlearn.data import load_dataset
    from qunlearn.experiments.poisoning_view import check_view_options, poisoned_view
    from qunlearn.plotting.poisoning import plot_poisoning
    from qunlearn.plotting.style import figure_file

    check_view_options(args.alpha, args.method, args.run, args.seed)
    out = args.out or (
        Path("results") / "data" / f"poisoning_{args.name}_alpha{args.alpha:.2f}_{args.method}.png"
    )
    figure_file(out)  # a bad suffix fails before the data are loaded
    dataset = load_dataset(args.name, cache_dir=args.cache_dir)
    view = poisoned_view(
        dataset, args.alpha, method=args.method, seed=args.seed, model=args.model, run=args.run
    )
    encoding = dataset.info.get("encoding")
    title = (
        f"{args.name}{f' ({encoding} encoding)' if encoding else ''}, alpha = {args.alpha:g}: "
        f"the poisoning of run {args.run} of the sweep's '{args.model}' cells (seed {args.seed})"
    )
    for written in plot_poisoning(view, out, title=title):
        print(f"figure: {written}")


def cmd_run(args) -> None:
    from qunlearn import api
    from qunlearn.experiments.engine import interrupts_noted, raise_if_interrupted, summary_line

    out = _out_dir(args.out) if args.out is not None else None
    config, config_out = api.prepare(
        args.config, out, args.overrides, tiny=args.tiny, models=_model_names(args)
    )
    if getattr(args, "devices", None) is not None:
        from qunlearn.experiments.config import with_devices

        config = with_devices(config, args.devices)
    resume = _resume_command(args, config_out)
    if getattr(args, "refine", False):
        from qunlearn.experiments.runner import refine_config, refine_dir, refine_grid

        grid = refine_grid(args.refine_grid)
        config, config_out = refine_config(config, config_out, grid), refine_dir(config_out, grid)
        if config is None:
            print(f"nothing to refine: every alpha of {args.refine_grid} is in the sweep already")
            return
    executor = _executor(args, config)  # checked, and a scheduler reached, before --out
    try:
        with interrupts_noted(), executor as started:  # a local cluster stops on Ctrl-C too
            results = api.run(
                config,
                config_out,
                cache_dir=args.cache_dir,
                progress=not args.quiet,
                command=resume,
                executor=started,
            )
            raise_if_interrupted()
    except KeyboardInterrupt as err:  # Ctrl-C, or SIGTERM (engine.Interrupted)
        signum = getattr(err, "signum", signal.SIGINT)
        print(
            f"\ninterrupted: finished cells are kept in {config_out}; to resume, run: {resume}",
            file=sys.stderr,
        )
        _exit_now(128 + signum)
    print(summary_line(results.last_run))
    print(f"results: {results.root / 'results.csv'}")
    print(f"manifest: {results.root / 'manifest.json'}")


DASK_CONNECT_TIMEOUT_S = 10.0  # an unreachable scheduler fails after this long


def _executor(args, config):
    """The executor ``--executor`` names, as a context manager that starts it (None: in
    process). Flag combinations are checked here, before anything is written."""
    from qunlearn.experiments.runner import EXECUTORS

    name = getattr(args, "executor", "in_process")
    scheduler, workers = getattr(args, "scheduler", None), getattr(args, "workers", None)
    if name not in EXECUTORS:
        raise QunlearnError(
            f"--executor {name!r}{did_you_mean(name, EXECUTORS)} is not known: choose one of "
            f"{', '.join(EXECUTORS)}"
        )
    if name != "dask" and (scheduler is not None or workers is not None):
        flag = "--scheduler" if scheduler is not None else "--workers"
        raise QunlearnError(f"{flag} needs --executor dask: add --executor dask, or drop {flag}")
    if name == "in_process":
        return contextlib.nullcontext()
    return EXECUTORS[name](
        config,
        scheduler=scheduler,
        workers=workers,
        cache_dir=args.cache_dir,
        connect_timeout=DASK_CONNECT_TIMEOUT_S,
    )


def _exit_now(status: int) -> None:
    """Exit without interpreter finalisation: an interrupt can land while XLA threads compile,
    and tearing the interpreter down under them crashes (exit 139). Every file we write is
    atomic and already closed, so nothing is lost by skipping finalisation."""
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(status)


def _model_names(args) -> list[str] | None:
    """``--models qnn,mlp`` -> ["qnn", "mlp"]; None when absent (every model table)."""
    text = getattr(args, "models", None)
    return None if text is None else [n.strip() for n in text.split(",") if n.strip()]


def _resume_command(args, out: Path) -> str:
    """The command line that continues an interrupted ``run`` (same config, overrides and --out)."""
    words = ["qunlearn"]
    if args.cache_dir:
        words += ["--cache-dir", str(args.cache_dir)]
    words += ["run", str(args.config), *args.overrides, "--out", str(out)]
    if args.tiny:
        words.append("--tiny")
    if getattr(args, "models", None) is not None:
        words += ["--models", args.models]
    if args.quiet:
        words.append("--quiet")
    if getattr(args, "executor", "in_process") != "in_process":
        words += ["--executor", args.executor]
    for flag in ("scheduler", "workers", "devices"):
        if getattr(args, flag, None) is not None:
            words += [f"--{flag}", str(getattr(args, flag))]
    if getattr(args, "refine", False):
        words += ["--refine", "--refine-grid", args.refine_grid]
    return shlex.join(words)


def cmd_compare(args) -> None:
    from qunlearn.compare import ACROSS_FILES, compare_across, compare_results_dir

    given = getattr(args, "out", None)
    if len(args.results) > 1:  # several noise sweeps: the one across-data table
        out = compare_across(args.results, _out_dir(given) if given is not None else None)
        print(out["text"])
        if given is not None:
            print("\nsaved " + ", ".join(str(Path(given) / name) for name in ACROSS_FILES))
        return
    (results,) = args.results
    where = _out_dir(given) if given is not None else Path(results)
    out = compare_results_dir(results, where)
    print(out["text"])
    print(f"\nsaved {where / 'compare.csv'}")


def _out_dir(text: str) -> Path:
    """An ``--out`` value: a non-empty path, created if missing."""
    if not str(text).strip():
        raise QunlearnError("--out is empty: pass a directory, e.g. --out results/mine")
    return Path(text)


def cmd_plot(args) -> None:
    from qunlearn.plotting.results import plot_results_dir
    from qunlearn.plotting.style import stem_suffixes

    stem_suffixes()  # a bad $QUNLEARN_FIGURE_FORMATS fails before any figure is drawn
    across = getattr(args, "across", None)
    if across is not None:
        from qunlearn.plotting.across import plot_across

        if getattr(args, "out", None) is not None:
            raise QunlearnError("--across FILE names the figure: leave out --out")
        for path in plot_across(args.results, across):
            print(f"figure: {path}")
        return
    if len(args.results) > 1:
        raise QunlearnError(
            f"{len(args.results)} results directories make one figure across them: pass "
            "--across FILE.png (or plot them one at a time)"
        )
    out = _out_dir(args.out) if getattr(args, "out", None) is not None else None
    for path in plot_results_dir(args.results[0], out):
        print(f"figure: {path}")


def cmd_configs(args) -> None:
    from qunlearn.experiments.shipped import describe_configs, format_configs

    print(format_configs(describe_configs()))


def cmd_report(args) -> None:
    from qunlearn.report import build_report

    out = _out_dir(args.out)
    print(f"report: {build_report(args.results, out)}")


def cmd_demo(args) -> None:
    from importlib import resources

    from qunlearn.plotting.style import stem_suffixes

    stem_suffixes()  # its figures come last: a bad $QUNLEARN_FIGURE_FORMATS fails before the run
    ns = argparse.Namespace(
        config=str(resources.files("qunlearn") / "configs" / "demo.toml"),
        overrides=[],
        tiny=False,
        out=args.out,
        cache_dir=args.cache_dir,
        quiet=False,
    )
    cmd_run(ns)
    out = Path(args.out)
    cmd_compare(argparse.Namespace(results=[out]))
    cmd_plot(argparse.Namespace(results=[out]))


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="qunlearn",
        description="Poisoning and unlearning of quantum and classical classifiers "
        "(arXiv 2508.02422).",
    )
    parser.add_argument(
        "--cache-dir",
        default=None,
        help="dataset cache (default: $QUNLEARN_CACHE or ~/.cache/qunlearn)",
    )
    sub = parser.add_subparsers(dest="command", required=True)
    cache = [argparse.ArgumentParser(add_help=False)]  # --cache-dir after the subcommand too
    cache[0].add_argument(
        "--cache-dir",
        default=argparse.SUPPRESS,
        help="dataset cache (default: $QUNLEARN_CACHE or ~/.cache/qunlearn)",
    )

    p = sub.add_parser("data", parents=cache, help="prepare, cache and describe a dataset")
    p.add_argument(
        "name",
        help="mnist, xxz, tfim, cluster_ising, iris, a registered name or a 'module:loader' "
        "reference",
    )
    p.add_argument(
        "--figure",
        default=None,
        help="xxz, tfim, cluster_ising: where to save the phase-diagram figure",
    )
    p.set_defaults(func=cmd_data)

    p = sub.add_parser(
        "plot-data",
        parents=cache,
        help="embed a training set in 2-D, marking clean, label-flipped and randomised samples",
    )
    p.add_argument(
        "name", help="a data set, as for `qunlearn data` (e.g. mnist, xxz, mypkg.data:load)"
    )
    p.add_argument("--alpha", type=float, default=0.3, help="noise ratio (default 0.3)")
    p.add_argument("--method", default="pca", help="pca (default, fast) or tsne (perplexity 30)")
    p.add_argument("--out", default=None, help="figure file, .png/.pdf/.svg")
    p.add_argument("--seed", type=int, default=0, help="the sweep config's seed (default 0)")
    p.add_argument(
        "--model", default="mlp", help="the sweep's model table whose poisoning to show (mlp)"
    )
    p.add_argument("--run", type=int, default=0, help="which run of that cell (default 0)")
    p.set_defaults(func=cmd_plot_data)

    p = sub.add_parser(
        "run", parents=cache, help="run an experiment config (resumes a finished part)"
    )
    p.add_argument(
        "config", help="TOML file, or a shipped config's name (qunlearn configs), e.g. fig2c_mnist"
    )
    p.add_argument(
        "overrides",
        nargs="*",
        metavar="KEY=VALUE",
        help="optional dotted overrides, e.g. runs=2 models.qnn.epochs=10",
    )
    p.add_argument(
        "--out", default=None, help="results directory (default results/<name>, -tiny with --tiny)"
    )
    p.add_argument("--tiny", action="store_true", help="apply the config's [tiny] smoke settings")
    p.add_argument(
        "--models",
        default=None,
        metavar="NAME[,NAME]",
        help="run only these [models.NAME] tables, e.g. --models qnn",
    )
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.add_argument(
        "--executor",
        default="in_process",
        metavar="NAME",
        help="where cells are computed: in_process (default) or dask (needs --scheduler or "
        "--workers)",
    )
    p.add_argument(
        "--scheduler",
        default=None,
        metavar="tcp://HOST:PORT",
        help="--executor dask: the address of a running Dask scheduler",
    )
    p.add_argument(
        "--workers",
        type=int,
        default=None,
        metavar="N",
        help="--executor dask: start a local cluster of N worker processes (1 thread each)",
    )
    p.add_argument(
        "--devices",
        default=None,
        metavar="one|all",
        help="all: split each cell's runs over every local device (jax.devices()); same numbers",
    )
    p.add_argument(
        "--refine",
        action="store_true",
        help="noise sweep: add the alphas of --refine-grid to the finished sweep in --out, as a "
        "refinement OUT/refine-LO-HI-STEP that compare and plot of OUT read too",
    )
    p.add_argument(
        "--refine-grid",
        default="0.40:0.60:0.02",
        metavar="LO:HI:STEP",
        help="the alphas --refine adds (default 0.40:0.60:0.02; those the sweep has are reused)",
    )
    p.set_defaults(func=cmd_run)

    p = sub.add_parser(
        "compare", parents=cache, help="compare a results directory with the paper's numbers"
    )
    p.add_argument(
        "results",
        nargs="+",
        metavar="RESULTS",
        help="results directory (holds results.csv and manifest.json); several noise sweeps "
        "give one table across them (α_c and width with 95 %% intervals per data set and model)",
    )
    p.add_argument(
        "--out",
        default=None,
        help="where compare.csv/json go (default: the results directory); with several results "
        "directories, where across.csv/json go (default: printed only, nothing written)",
    )
    p.set_defaults(func=cmd_compare)

    p = sub.add_parser(
        "plot", parents=cache, help="draw the figures of a results directory (PNG and PDF)"
    )
    p.add_argument("results", nargs="+", metavar="RESULTS", help="results directory")
    p.add_argument(
        "--out", default=None, help="where the figures go (default: the results directory)"
    )
    p.add_argument(
        "--across",
        default=None,
        metavar="FILE",
        help="one figure across noise sweeps instead: α_c and width with 95 %% intervals per "
        "data set and model, into FILE (.png, .pdf or .svg; a stem writes PNG and PDF)",
    )
    p.set_defaults(func=cmd_plot)

    p = sub.add_parser(
        "configs", parents=cache, help="list the shipped configs (qunlearn run NAME runs one)"
    )
    p.set_defaults(func=cmd_configs)

    p = sub.add_parser(
        "report",
        parents=cache,
        help="one self-contained HTML page of results directories (config, compare, figures)",
    )
    p.add_argument("results", nargs="+", metavar="RESULTS", help="results directories")
    p.add_argument("--out", default="report.html", help="the HTML file (default report.html)")
    p.set_defaults(func=cmd_report)

    p = sub.add_parser(
        "demo", parents=cache, help="a small noise sweep (MLP vs QNN, MNIST), compared and plotted"
    )
    p.add_argument("--out", default="results/demo", help="results directory")
    p.set_defaults(func=cmd_demo)
    return parser


def parse_args(argv=None) -> argparse.Namespace:
    """Parse the command line. ``run``'s ``key=value`` overrides may come before or after its
    options (argparse alone stops collecting positionals at the first option)."""
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    if extra:
        if getattr(args, "func", None) is not cmd_run or any(a.startswith("-") for a in extra):
            parser.error(f"unrecognized arguments: {' '.join(extra)}")
        args.overrides = [*args.overrides, *extra]  # a word without "=" is refused by the config
    return args


def _one_line_warning(message, category, filename, lineno, file=None, line=None) -> None:
    """Warnings (ours and libraries') as one ``warning: ...`` line, without a source echo."""
    print("warning: " + " ".join(str(message).split()), file=sys.stderr)


def main(argv=None) -> int:
    args = parse_args(argv)
    _setup_jax()
    shown, warnings.showwarning = warnings.showwarning, _one_line_warning
    try:
        args.func(args)
    except QunlearnError as err:
        print("error: " + " ".join(str(err).splitlines()), file=sys.stderr)  # always one line
        return 2
    finally:
        warnings.showwarning = shown
    return 0
