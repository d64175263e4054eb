"""fit as a layer: the VI optimum as a differentiable function of model hyperparameters.

It lives beside fit and uses the solvers (:func:`vi_ext.solvers.custom_root`); the solvers
know nothing of fitting.

Let the model depend on hyperparameters h (prior scales, a regularization strength, ...).
Variational inference picks guide parameters phi*(h) that maximize an objective L(phi, h)
(the ELBO by default). A downstream loss l(phi*(h), h) (a validation log-likelihood, a
decision loss) then has the hypergradient

    dl/dh = dl/dh|_phi + (dphi*/dh)^T dl/dphi,
    dphi*/dh = -[d^2 L / dphi^2]^{-1} d^2 L / dphi dh,

from the implicit function theorem applied to the stationarity condition
dL/dphi (phi*(h), h) = 0: one linear solve with the Hessian at the optimum, no
backpropagation through the optimizer's iterations (Blondel et al. 2022; for bilevel
hyperparameter learning, Pedregosa 2016 and Lorraine, Vicol & Duvenaud 2020).

The objective is an expectation, so its stationarity condition is random. The layer fixes
the random numbers: L_S(phi, h) is the objective estimated from ``num_particles`` draws with
one fixed key (common random numbers; the sample-average approximation), a deterministic,
smooth function of (phi, h) when every latent site is reparameterized. The layer solves
dL_S/dphi = 0 to a tolerance by L-BFGS (optax) and differentiates that solution exactly
(:func:`~vi_ext.solvers.implicit.custom_root`, JVP rules: forward and reverse mode). As
``num_particles`` grows, phi*_S and its derivative approach those of the exact objective.

Strategies other than reparameterization (REINFORCE, enumeration of a discrete guide
site, ...) give unbiased gradients that are not the gradient of a fixed-sample objective, so
the stationarity condition would not be a gradient system: the layer requires continuous,
reparameterizable latents (discrete model sites can be enumerated out by the model).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax
import optax.tree_utils as otu
from jax import lax

from vi_ext import objectives as _objectives
from vi_ext.errors import ArgumentError
from vi_ext.keys import as_key
from vi_ext.params import constrain, param_sites, unconstrain
from vi_ext.program.transform import surrogate_fn
from vi_ext.solvers.implicit import custom_root


class VIOptimum(NamedTuple):
    """The fixed-sample VI optimum at given hyperparameters (a pytree).

    Attributes:
        params: constrained guide (and model) parameters, keyed like NumPyro's param store;
            differentiable in the hyperparameters.
        objective: the fixed-sample objective L_S at ``params`` (not differentiated through
            the optimum; use the params for downstream losses).
        grad_norm: the max-norm of dL_S/dphi (unconstrained) at the returned params.
        iterations: L-BFGS iterations taken.
        converged: ``grad_norm`` fell below the tolerance (the layer never raises: check it).
    """

    params: dict
    objective: jax.Array
    grad_norm: jax.Array
    iterations: jax.Array
    converged: jax.Array


def vi_layer(model: Callable, guide: Callable, *, objective: Any = None,
             num_particles: int = 64, key: Any = 0, max_iterations: int = 500,
             tol: float | None = None, solve: str = "cg",
             init_params: Mapping[str, Any] | None = None) -> Callable[..., VIOptimum]:
    """The VI optimum as a differentiable layer: ``layer(hyper, *args, **kwargs)``.

    ``model`` and ``guide`` are called as ``model(hyper, *args, **kwargs)`` (hyper: any
    pytree of float arrays, the quantities to differentiate with respect to).

    Args:
        model: a NumPyro model taking the hyperparameters first.
        guide: a guide for it (called with the same arguments); reparameterizable.
        objective: the objective maximized (default ``vx.objectives.elbo(num_particles)``);
            it is evaluated with one fixed key.
        num_particles: draws in the fixed-sample ELBO (when ``objective`` is None).
        key: the fixed key of the sample-average objective (and of the initialization).
        max_iterations: the cap on L-BFGS iterations.
        tol: stop when the max-norm of the gradient in the unconstrained parameters is
            below ``tol * max(1, |L_S|)`` (default: 1e-8 in float64, 1e-4 in float32).
        solve: the linear solve with the Hessian (``"cg"``: it is symmetric positive
            definite at a strict local optimum).
        init_params: constrained starting values for some params (default: as ``fit``).

    Returns:
        ``layer(hyper, *args, **kwargs) -> VIOptimum``, jit-, grad-, jvp- and
        vmap-compatible in ``hyper`` and the arguments.

    Example (empirical Bayes by hypergradient descent)::

        layer = vx.vi_layer(model, guide)

        def validation_loss(log_scale):
            params = layer(log_scale, x_train, y_train).params
            return -held_out_log_lik(params, x_val, y_val)

        g = jax.grad(validation_loss)(log_scale)
    """
    if isinstance(num_particles, bool) or not isinstance(num_particles, int) \
            or num_particles < 1:
        raise ArgumentError("num_particles", f"expected an int >= 1, got {num_particles!r}.")
    if isinstance(max_iterations, bool) or not isinstance(max_iterations, int) \
            or max_iterations < 1:
        raise ArgumentError("max_iterations", f"expected an int >= 1, got {max_iterations!r}.")
    if tol is not None and not (isinstance(tol, (int, float)) and tol > 0):
        raise ArgumentError("tol", f"expected a positive number, got {tol!r}.")
    obj = _objectives.elbo(num_particles) if objective is None else _objectives.get(objective)
    k_init, k_obj = jax.random.split(as_key(key))

    def layer(hyper: Any, *args: Any, **kwargs: Any) -> VIOptimum:
        full_args = (hyper, *args)
        values, cons = param_sites(model, guide, lax.stop_gradient(full_args),
                                   lax.stop_gradient(kwargs), k_init)
        if init_params:
            unknown = set(init_params) - set(values)
            if unknown:
                raise ArgumentError("init_params", f"no param site named {sorted(unknown)}; "
                                                   f"params: {sorted(values)}.")
            values.update({k: jnp.asarray(v) for k, v in init_params.items()})
        if not values:
            raise ArgumentError("guide", "the guide and model have no numpyro.param sites.")
        u0 = lax.stop_gradient(unconstrain(values, cons))
        dtype = jnp.result_type(*jax.tree.leaves(u0))
        threshold = tol if tol is not None else (1e-8 if dtype == jnp.float64 else 1e-4)

        def loss(u, full_args, kwargs):
            sur = surrogate_fn(obj, model, guide, full_args, kwargs)
            value, _ = sur(constrain(u, cons), k_obj)
            return -value

        def optimality(u, full_args, kwargs):
            return jax.grad(loss)(u, full_args, kwargs)

        @custom_root(optimality, solve=solve, has_aux=True)
        def solver(u_init, full_args, kwargs):
            def f(u):
                return loss(u, full_args, kwargs)

            opt = optax.lbfgs()
            value_and_grad = optax.value_and_grad_from_state(f)

            def gnorm(g):
                return jnp.max(jnp.stack([jnp.max(jnp.abs(x)) for x in jax.tree.leaves(g)]))

            def stationary(value, g):
                return gnorm(g) <= threshold * jnp.maximum(1.0, jnp.abs(value))

            def cond(carry):
                _, _, it, value, g = carry
                return (it < max_iterations) & ~stationary(value, g)

            def body(carry):
                u, state, it, _, _ = carry
                value, g = value_and_grad(u, state=state)
                updates, state = opt.update(g, state, u, value=value, grad=g, value_fn=f)
                u = optax.apply_updates(u, updates)
                # the line search leaves the value and gradient at the new point in the state
                return (u, state, it + 1, otu.tree_get(state, "value"),
                        otu.tree_get(state, "grad"))

            value, g = jax.value_and_grad(f)(u_init)
            u, _, it, value, g = lax.while_loop(
                cond, body, (u_init, opt.init(u_init), jnp.asarray(0), value, g))
            return u, (value, gnorm(g), it, stationary(value, g))

        u, (value, norm, it, ok) = solver(u0, full_args, kwargs)
        return VIOptimum(constrain(u, cons), -value, norm, it, ok)

    return layer
