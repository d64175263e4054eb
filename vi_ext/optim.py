"""fit's default optimizer: Adam with a step held, then annealed over the second half.

With a constant step size gamma, stochastic-gradient VI does not converge: the iterates
settle into a stationary distribution around the optimum whose spread grows with gamma
(Dhaka et al., 2020), and the fit returns one draw from it. Annealing the step in the last
part of the run shrinks that spread without slowing the approach to the optimum:

    gamma_t = gamma_0                                             for t < T / 2,
    gamma_t = gamma_0 (a + (1 - a) (1 + cos(pi s)) / 2),   s = (t - T/2) / (T - T/2),

a cosine from gamma_0 down to a * gamma_0 (a = ``final_fraction``). The schedule is a function
of the step count alone, which the optimizer state carries, so a resumed fit with the same
``num_steps`` follows it exactly.

References:
    Dhaka, Catalina, Andersen, Magnusson, Huggins, Vehtari. Robust, Accurate Stochastic
    Optimization for Variational Inference. NeurIPS 2020.
    Loshchilov, Hutter. SGDR: Stochastic Gradient Descent with Warm Restarts. ICLR 2017.
"""

from __future__ import annotations

import optax

from vi_ext.errors import ArgumentError

DEFAULT_LEARNING_RATE = 1e-2
DEFAULT_FINAL_FRACTION = 0.1


def annealed_schedule(num_steps: int, learning_rate: float = DEFAULT_LEARNING_RATE,
                      final_fraction: float = DEFAULT_FINAL_FRACTION) -> optax.Schedule:
    """``learning_rate`` for the first half of ``num_steps``, then a cosine down to
    ``final_fraction * learning_rate`` at step ``num_steps`` (held there beyond it)."""
    if isinstance(num_steps, bool) or not isinstance(num_steps, int) or num_steps < 1:
        raise ArgumentError("num_steps", f"must be a positive int, got {num_steps!r}.")
    if not learning_rate > 0:
        raise ArgumentError("learning_rate", f"must be > 0, got {learning_rate!r}.")
    if not 0 < final_fraction <= 1:
        raise ArgumentError("final_fraction", f"must be in (0, 1], got {final_fraction!r}.")
    hold = num_steps // 2
    decay = optax.cosine_decay_schedule(learning_rate, max(1, num_steps - hold),
                                        alpha=final_fraction)
    return optax.join_schedules([optax.constant_schedule(learning_rate), decay], [hold])


def default_optimizer(num_steps: int, learning_rate: float = DEFAULT_LEARNING_RATE,
                      final_fraction: float = DEFAULT_FINAL_FRACTION
                      ) -> optax.GradientTransformation:
    """Adam on :func:`annealed_schedule`: what :func:`vi_ext.fit` uses when no optimizer is
    given.

    On the posterior-quality benchmark (5000 steps) the annealed step lowers the error of the
    posterior means against NUTS by about 10% on logistic regression and 40% on non-centered
    eight schools, compared with constant Adam(1e-2) (docs/design.md).

    Example:
        >>> res = vx.fit(model, optimizer=vx.optim.default_optimizer(5000, 5e-3),
        ...              num_steps=5000)
    """
    return optax.adam(annealed_schedule(num_steps, learning_rate, final_fraction))
