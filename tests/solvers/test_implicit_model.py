"""A model whose mean solves an inner problem through custom_root: fit and forward-mode NUTS."""

import jax
import jax.numpy as jnp
import numpy as np
from numpyro.infer import MCMC, NUTS
from numpyro.infer.util import log_density

import vi_ext as vx
from models import implicit_regression as ir


def test_inner_solution_gradients_match_finite_differences():
    with jax.enable_x64(True):
        kw = {k: np.asarray(v, np.float64) for k, v in ir.data().items()}

        @jax.jit  # (each side one program: eagerly, every operation compiles on its own)
        def logp(log_lam, log_temp):
            lp, _ = log_density(ir.model, (), kw, {"log_lam": log_lam, "log_temp": log_temp})
            return lp

        g = jax.grad(logp, (0, 1))(0.3, -0.1)
        gf = jax.jacfwd(logp, (0, 1))(0.3, -0.1)
        h = 1e-5
        fd = ((logp(0.3 + h, -0.1) - logp(0.3 - h, -0.1)) / (2 * h),
              (logp(0.3, -0.1 + h) - logp(0.3, -0.1 - h)) / (2 * h))
        np.testing.assert_allclose(g, fd, rtol=1e-6)
        np.testing.assert_allclose(gf, g, rtol=1e-10)
        w = ir.inner_solution(jnp.zeros(6), jnp.exp(0.3), kw["X"], kw["y"])
        assert float(jnp.max(jnp.abs(ir.inner_gradient(w, jnp.exp(0.3), kw["X"], kw["y"])))) < 1e-8


def test_fit_reaches_the_variational_parameters_and_nuts_runs_in_forward_mode():
    kw = ir.data()
    # the default guide: its start is chosen through the implicit layer too
    res = vx.fit(ir.model, **kw, num_steps=150, key=0, progress=False)
    assert np.all(np.isfinite(res.losses)) and res.num_rejected == 0
    assert res.start is not None and np.isfinite(res.start.scores[res.start.name])
    median = res.guide.median(res.params)
    assert any(abs(float(median[n]) - float(res.start.values[n])) > 1e-4
               for n in ("log_lam", "log_temp"))
    mcmc = MCMC(NUTS(ir.model, forward_mode_differentiation=True), num_warmup=30,
                num_samples=30, progress_bar=False)
    mcmc.run(jax.random.PRNGKey(0), **kw)
    s = mcmc.get_samples()
    assert s["w"].shape == (30, 6) and bool(jnp.all(jnp.isfinite(s["log_lam"])))
