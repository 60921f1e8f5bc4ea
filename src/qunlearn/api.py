"""The Python API, for notebooks: the same checks, store and cell engine as the ``qunlearn``
command (which is a shell over these functions).

    import qunlearn

    res = qunlearn.run("fig2c_mnist", tiny=True, models=["mlp"])  # a shipped config, by name
    res.table()        # results.csv as a pandas DataFrame (rows() without pandas)
    print(res.compare()["text"])
    figures = res.plot()  # {file stem: matplotlib Figure}; nothing is written
    old = qunlearn.load("results/fig2c_mnist")  # read-only, verified cells only

JAX flags: :func:`run` turns on ``jax_enable_x64`` for the whole process before it computes
anything, as the command line does (the models and the paper's numbers are float64 /
complex128). It is never turned on by ``import qunlearn`` or by :func:`load`.
"""

from __future__ import annotations

import io
import os
from collections.abc import Iterable, Mapping
from pathlib import Path

from qunlearn.errors import QunlearnError, did_you_mean


def enable_x64() -> None:
    """Turn on JAX's 64-bit types for this process (the one JAX flag we set; see the module)."""
    import jax

    jax.config.update("jax_enable_x64", True)


def prepare(
    config_or_name, out=None, overrides: Iterable[str] = (), *, tiny: bool = False, models=None
):
    """(checked config, results directory) of a run, before anything is written.

    ``config_or_name``: a TOML path, the name of a shipped config (``qunlearn configs``), a
    dict of what such a file holds (``{"experiment": "noise_sweep", "models": {...}, ...}``), or
    a config object (e.g. ``dataclasses.replace`` of a loaded one; then no overrides, tiny or
    models). ``out`` defaults to ``results/<name>`` (``results/<name>-tiny`` with ``tiny``)."""
    from qunlearn.experiments.config import CONFIG_TYPES, check, config_from_data, load_config

    if isinstance(overrides, str):
        overrides = [overrides]
    elif isinstance(overrides, Mapping):
        raise QunlearnError(
            "overrides must be 'key=value' strings as on the command line, e.g. "
            "overrides=['runs=2', 'models.qnn.epochs=10']"
        )
    overrides = list(overrides)
    if isinstance(models, str):
        models = [n.strip() for n in models.split(",") if n.strip()]
    if type(config_or_name) in CONFIG_TYPES.values():  # a config object (all are dataclasses)
        if overrides or tiny or models is not None:
            raise QunlearnError(
                "overrides, tiny and models apply to a config file or name: change a config "
                "object with dataclasses.replace instead"
            )
        config = config_or_name
        check(config)
    elif isinstance(config_or_name, str | os.PathLike):
        config = load_config(config_or_name, overrides, tiny=tiny, models=models)
    elif isinstance(config_or_name, Mapping):
        config = config_from_data(
            dict(config_or_name), "the config dict", overrides, tiny=tiny, models=models
        )
    else:
        raise QunlearnError(
            f"cannot run a {type(config_or_name).__name__}: pass a config file, the name of a "
            "shipped config (qunlearn.configs() lists them), a dict of a config file's keys or a "
            "config object"
        )
    if out is None:
        out = Path("results") / (f"{config.name}-tiny" if tiny else config.name)
    elif not str(out).strip():
        raise QunlearnError("out is empty: pass a directory, e.g. out='results/mine'")
    return config, Path(out)


def run(
    config_or_name,
    out=None,
    overrides: Iterable[str] = (),
    tiny: bool = False,
    models=None,
    progress: bool = True,
    *,
    cache_dir=None,
    executor=None,
    command: str = "",
) -> Results:
    """Run an experiment (resuming: finished cells in ``out`` are reused) and return its
    :class:`Results`. Arguments as :func:`prepare`; ``progress``: bars or lines on stderr;
    ``cache_dir``: the dataset cache (default ``$QUNLEARN_CACHE`` or ``~/.cache/qunlearn``).
    Turns on ``jax_enable_x64`` first. An interrupt (Ctrl-C, a notebook's stop button) keeps
    the finished cells; the same call resumes."""
    from qunlearn.experiments.runner import run as run_config

    config, out = prepare(config_or_name, out, overrides, tiny=tiny, models=models)
    enable_x64()
    if not command:
        command = f"qunlearn.run({str(config_or_name)!r}, out={str(out)!r})"
    store = run_config(
        config, out, cache_dir=cache_dir, progress=progress, executor=executor, command=command
    )
    return Results(store.root, manifest=store.manifest)


def load(results_dir) -> Results:
    """A results directory, read-only: its tables rebuilt from the cells that verify (a warning
    line names each cell left out). Writes nothing."""
    results = Results(results_dir)
    results.verified  # noqa: B018  (read and verify now: a bad directory fails here)
    return results


def register_model(name: str, factory, *, replace: bool = False) -> None:
    """Make ``factory(input_dim, complex_input, **hyper) -> (init, apply)`` the model ``name``
    in this process (configs then write ``model = "name"``). Check it first with
    :func:`qunlearn.testing.check_model`; ``qunlearn.run`` checks it again before writing.
    Dask workers are other processes: there, name it as ``"package.module:factory"``."""
    from qunlearn.models import MODELS

    MODELS.register(name, factory, replace=replace)


def register_method(name: str, factory, *, replace: bool = False) -> None:
    """Make ``factory(model, *, n_retain, n_forget, epochs, batch_size, **options) -> Method``
    the unlearning method ``name`` in this process (see :func:`register_model`)."""
    from qunlearn.unlearn import METHODS

    METHODS.register(name, factory, replace=replace)


def register_dataset(name: str, loader, *, replace: bool = False) -> None:
    """Make ``loader(*, cache_dir=None, **options) -> Dataset`` the dataset ``name`` in this
    process (see :func:`register_model`)."""
    from qunlearn.data import DATASETS

    DATASETS.register(name, loader, replace=replace)


def register_noise(name: str, fn, *, replace: bool = False) -> None:
    """Make ``fn(key, x, y, alpha, **options) -> (x', y', mask)`` the noise kind ``name`` in
    this process (see :func:`register_model`)."""
    from qunlearn.noise import NOISE

    NOISE.register(name, fn, replace=replace)


def configs() -> list[dict]:
    """The shipped configs: [{"name", "experiment", "summary"}], as ``qunlearn configs``."""
    from qunlearn.experiments.shipped import describe_configs

    return describe_configs()


class Results:
    """What a run left in a results directory, seen through its verified cells only (see
    :class:`~qunlearn.experiments.runner.VerifiedResults`). Nothing here writes, except
    :meth:`save_plots`."""

    def __init__(self, root, *, manifest: dict | None = None):
        self.root = Path(root)
        self._manifest = manifest
        self._verified = None

    @property
    def verified(self):
        """The tables rebuilt from the verified cells (read once, on first use)."""
        if self._verified is None:
            from qunlearn.compare import read_verified

            self._verified = read_verified(self.root)
        return self._verified

    @property
    def manifest(self) -> dict:
        return self._manifest if self._manifest is not None else self.verified.manifest

    @property
    def config(self) -> dict:
        """The resolved config the results were computed for (a plain dict)."""
        return self.manifest["config"]

    @property
    def last_run(self) -> dict:
        """The last run's reused and computed cells and its wall time (manifest ``last_run``)."""
        return self.manifest.get("last_run", {})

    @property
    def tables(self) -> list[str]:
        """The names of its tables, e.g. ["results.csv"] (unlearning also "sweep.csv")."""
        return sorted(self.verified.texts)

    def rows(self, name: str = "results.csv") -> list[dict]:
        """A table's rows as dicts of strings (as ``csv.DictReader`` reads them); no pandas."""
        self._known(name)
        return self.verified.table(name)

    def table(self, name: str = "results.csv"):
        """A table as a pandas DataFrame (numbers parsed). Needs pandas (``pip install pandas``,
        or the ``notebook`` extra); :meth:`rows` gives the same rows without it."""
        self._known(name)
        try:
            import pandas
        except ImportError:
            raise QunlearnError(
                "Results.table() returns a pandas DataFrame: pip install pandas (or "
                "'qunlearn[notebook]'), or use Results.rows() for plain dicts"
            ) from None
        return pandas.read_csv(io.StringIO(self.verified.texts[name]))

    def _known(self, name: str) -> None:
        if name not in self.verified.texts:
            raise QunlearnError(
                f"{self.root} has no table {name!r}{did_you_mean(name, self.tables)}: its "
                f"tables are {', '.join(self.tables)}"
            )

    def compare(self) -> dict:
        """Ours against the paper, as ``qunlearn compare`` prints it, without writing
        compare.csv: {"table": [row dicts], "text": the printed lines, ...} (``summary`` and the
        like as the experiment kind's comparator returns them)."""
        from qunlearn.compare import compare_verified

        return compare_verified(self.verified)

    def plot(self) -> dict:
        """Every figure ``qunlearn plot`` draws, {file stem: matplotlib Figure}; no file is
        written (see :meth:`save_plots`). In a notebook, ``display(fig)`` shows one."""
        from qunlearn.plotting.results import results_figures

        return results_figures(self.verified)

    def save_plots(self, out=None) -> list[Path]:
        """Write every figure as PNG and PDF into ``out`` (default: the results directory), as
        ``qunlearn plot`` does; returns the files."""
        from qunlearn.plotting.results import plot_results_dir

        return plot_results_dir(self.root, out)

    def __repr__(self) -> str:
        config = self.config
        return (
            f"<qunlearn.Results {str(self.root)!r}: {config.get('experiment')} "
            f"{config.get('name')!r}>"
        )
