"""Random-label fine-tuning: from the poisoned teacher, train on the retain set with its labels and
on the forget set with random labels, so the model unlearns what it memorised of D_f."""

import math

import jax
import jax.numpy as jnp

from qunlearn.train import bce, predict, shuffled_plan, weighted_mean
from qunlearn.unlearn import Method


def random_label_finetune(
    model, *, n_retain, n_forget, epochs, batch_size, forget_w=1.0, label_seed=0
):
    """Each step a batch of D_r (true labels) and D_f (labels drawn once from ``label_seed``):
    CE(D_r rows) + forget_w * CE(D_f rows, random labels)."""
    n_rows = n_retain + n_forget
    bs = n_rows if batch_size == 0 else min(batch_size, n_rows)

    def inputs(teacher, split):
        random_labels = jax.random.bernoulli(jax.random.PRNGKey(label_seed), 0.5, (n_forget,))
        data = {
            "x": jnp.concatenate([split["x_retain"], split["x_forget"]]),
            "y": jnp.concatenate([split["y_retain"], random_labels.astype(split["y_retain"].dtype)]),
            "forget": jnp.concatenate([jnp.zeros(n_retain), jnp.ones(n_forget)]),
        }
        return data, {}

    def objective(params, batch, extra):
        weights = extra["weights"]
        loss = bce(predict(model, params, batch["x"]), batch["y"])
        row_weight = jnp.where(batch["forget"] > 0, weights["forget_ce_random"], weights["ce"])
        return weighted_mean(loss, batch["w"] * row_weight)

    return Method(
        objective=objective,
        plan=shuffled_plan(n_rows, bs),
        inputs=inputs,
        start=lambda key, teacher: teacher,
        weights={"ce": 1.0, "forget_ce_random": float(forget_w)},
        form=("random_label_finetune", n_retain, n_forget, bs, epochs, label_seed),
        variant="user",
        steps=epochs * math.ceil(n_rows / bs),
    )
