"""What is comparable with the paper: the protocol a result ran against the shipped config that
states the paper's, and the header lines every comparison prints."""

from __future__ import annotations

from importlib import resources

from qunlearn.compare.common import read_csv

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
    from qunlearn.families import keyword_defaults
    from qunlearn.models import MODELS

    factory = MODELS.builtin(kind)  # never a user's: reading results imports no named module
    if factory is None:
        return dict(hyper)
    full = keyword_defaults(factory, 2) | hyper
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
