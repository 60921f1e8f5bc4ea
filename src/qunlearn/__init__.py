"""qunlearn: poisoning, unlearning and loss-landscape studies of quantum and classical classifiers.

Import order of the subpackages (one way only):
data, models -> train -> unlearn, metrics, hessian -> experiments -> plotting -> report -> cli/api.

For notebooks: ``qunlearn.run(config_or_name, ...)``, ``qunlearn.load(results_dir)`` and
``qunlearn.configs()`` (see :mod:`qunlearn.api`); your own members of the open families:
``qunlearn.register_model/method/dataset/noise(name, factory)`` and their contract checks in
:mod:`qunlearn.testing`. They are imported on first use, so
``import qunlearn`` stays cheap (no JAX) and sets no JAX flag.
"""

__version__ = "0.1.0"

_API = (
    "run",
    "load",
    "configs",
    "Results",
    "register_model",
    "register_method",
    "register_dataset",
    "register_noise",
)
__all__ = ["__version__", *_API]


def __getattr__(name: str):
    if name in _API:
        from qunlearn import api

        return getattr(api, name)
    raise AttributeError(f"module 'qunlearn' has no attribute {name!r}")


def __dir__():
    return sorted([*globals(), *_API])
