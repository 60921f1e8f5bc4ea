"""The poisoned training sets of a Fig 2 cell, embedded in 2-D (``qunlearn plot-data``).

The poisoning is the sweep's own: the key of run ``run`` of cell (dataset, model table, noise,
alpha) under ``seed`` (:mod:`qunlearn.experiments.keys`), so the figure shows exactly the samples
that cell trained on. One embedding is fitted to the clean training features together with the
feature-randomised replacements, so both poisonings share its axes. Complex inputs (XXZ) are
embedded as [Re; Im].
"""

from __future__ import annotations

from dataclasses import dataclass

import jax
import numpy as np

from qunlearn.errors import QunlearnError
from qunlearn.experiments.common import features
from qunlearn.experiments.keys import run_keys, stable_key
from qunlearn.experiments.noise_sweep import poison_runs

EMBEDDINGS = ("pca", "tsne")
TSNE_PERPLEXITY = 30.0  # the reference notebook's
TSNE_ITERATIONS = 1000


@dataclass(frozen=True)
class PoisonedView:
    """2-D coordinates of one cell's poisonings. ``clean_xy`` (N, 2): the training set as given;
    ``labels`` (N,) the clean labels; ``flipped`` (N,) bool, the label-flip mask; ``given`` (N,)
    the labels after flipping (another class for each flipped row); ``random_xy`` (n, 2): the
    feature-randomised replacements of the rows ``randomised`` (N,) bool marks."""

    clean_xy: np.ndarray
    labels: np.ndarray
    flipped: np.ndarray
    given: np.ndarray
    random_xy: np.ndarray
    randomised: np.ndarray
    method: str


def check_view_options(alpha: float, method: str, run: int, seed: int) -> None:
    """One-line errors for bad ``plot-data`` options, before any data is loaded."""
    if not 0.0 <= alpha < 1.0:
        raise QunlearnError(f"--alpha {alpha}: use a noise ratio 0 <= alpha < 1, e.g. 0.3")
    if method not in EMBEDDINGS:
        raise QunlearnError(f"--method {method!r}: choose one of {', '.join(EMBEDDINGS)}")
    if run < 0 or seed < 0:
        raise QunlearnError("--run and --seed must be non-negative integers, e.g. 0")


def poisoned_masks(dataset, alpha: float, *, seed: int = 0, model: str = "mlp", run: int = 0):
    """(flip mask, labels after flipping, randomised features (N, D), randomised mask) of run
    ``run`` of the sweep's cells (dataset, ``model``, label_flip / feature_randomization,
    ``alpha``) under ``seed``."""
    root = jax.random.PRNGKey(seed)
    out = {}
    for noise in ("label_flip", "feature_randomization"):
        cell = stable_key(root, dataset.name, model, noise, f"{alpha:.6f}")
        key = run_keys(cell, run + 1)[run : run + 1, 0]  # the poisoning key of that run
        x, y, mask = poison_runs(
            noise,
            key,
            dataset.x_train,
            dataset.y_train,
            float(alpha),
            raw_dim=dataset.info.get("raw_dim"),
        )
        out[noise] = (np.asarray(x[0]), np.asarray(y[0]), np.asarray(mask[0]))
    (_, given, flipped), (x_random, _, randomised) = out["label_flip"], out["feature_randomization"]
    return flipped, given, x_random, randomised


def embed(points: np.ndarray, method: str, seed: int = 0) -> np.ndarray:
    """(M, D) real points -> (M, 2): PCA (exact SVD) or t-SNE (perplexity 30, PCA start)."""
    if method == "pca":
        from sklearn.decomposition import PCA

        return PCA(n_components=2, svd_solver="full").fit_transform(points)
    from sklearn.manifold import TSNE

    perplexity = min(TSNE_PERPLEXITY, (len(points) - 1) / 3)  # sklearn needs perplexity < M
    return TSNE(
        n_components=2,
        perplexity=perplexity,
        max_iter=TSNE_ITERATIONS,
        init="pca",
        random_state=seed,
    ).fit_transform(points)


def poisoned_view(
    dataset, alpha: float, *, method: str = "pca", seed: int = 0, model: str = "mlp", run: int = 0
) -> PoisonedView:
    """Embed ``dataset``'s training set and the sweep's poisonings of it at ``alpha``."""
    check_view_options(alpha, method, run, seed)
    flipped, given, x_random, randomised = poisoned_masks(
        dataset, alpha, seed=seed, model=model, run=run
    )
    clean = features(np.asarray(dataset.x_train), "realified")
    replaced = features(x_random[randomised], "realified")
    xy = embed(np.concatenate([clean, replaced]).astype(np.float64), method, seed)
    return PoisonedView(
        clean_xy=xy[: len(clean)],
        labels=np.asarray(dataset.y_train),
        flipped=flipped,
        given=given,
        random_xy=xy[len(clean) :],
        randomised=randomised,
        method=method,
    )
