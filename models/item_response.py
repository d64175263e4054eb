"""A one-parameter (Rasch) item-response-theory model.

    delta ~ Normal(0.75, 1)                    mean ability
    alpha_j ~ Normal(0, 1)                     student j's ability,   j = 1..J
    beta_k ~ Normal(0, 1)                      question k's difficulty, k = 1..K
    y_jk ~ Bernoulli(sigmoid(alpha_j - beta_k + delta))

Data: J = 50 students each answering K = 20 questions, simulated once with a fixed seed
(delta = 0.75, abilities and difficulties drawn from their priors).

Reference: Rasch, "Probabilistic models for some intelligence and attainment tests", 1960;
Stan User's Guide, "Item-response theory models"; the Inference Gym's
``SyntheticItemResponseTheory``.
"""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np
import numpyro
import numpyro.distributions as dist

J, K = 50, 20


def model(student: np.ndarray, question: np.ndarray, y=None, num_students: int = J,
          num_questions: int = K) -> None:
    """The Rasch model on (student, question, answer) triples.

    Args:
        student: index of the student of each answer, shape [N] (int).
        question: index of the question of each answer, shape [N] (int).
        y: answers in {0, 1}, shape [N], or None to simulate them.
        num_students: J.
        num_questions: K.
    """
    delta = numpyro.sample("delta", dist.Normal(0.75, 1.0))
    with numpyro.plate("students", num_students):
        alpha = numpyro.sample("alpha", dist.Normal(0.0, 1.0))
    with numpyro.plate("questions", num_questions):
        beta = numpyro.sample("beta", dist.Normal(0.0, 1.0))
    logits = alpha[student] - beta[question] + delta
    with numpyro.plate("answers", len(student)):
        numpyro.sample("y", dist.Bernoulli(logits=logits), obs=y)


def data(seed: int = 3) -> dict:
    """Every student answers every question: keyword arguments student, question, y."""
    rng = np.random.default_rng(seed)
    delta, alpha, beta = 0.75, rng.normal(size=J), rng.normal(size=K)
    student, question = (a.ravel().astype(np.int32) for a in np.meshgrid(
        np.arange(J), np.arange(K), indexing="ij"))
    p = 1.0 / (1.0 + np.exp(-(alpha[student] - beta[question] + delta)))
    y = (rng.random(len(p)) < p).astype(np.float32)
    return {"student": jnp.asarray(student), "question": jnp.asarray(question), "y": y}
