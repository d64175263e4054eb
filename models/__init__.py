"""Example NumPyro models with their small bundled data.

Every module defines one or more model functions, ``model`` (its default model) and
``data()``, which returns the default model's keyword arguments, observations included::

    from models import eight_schools
    eight_schools.model(**eight_schools.data())

- :mod:`models.eight_schools`: Rubin's eight schools, centered and non-centered.
- :mod:`models.logistic_regression`: Bayesian logistic regression on the Wisconsin
  breast-cancer data (569 x 30).
- :mod:`models.time_series`: a centered AR(1) with heavy-tailed priors whose density is NaN
  for |phi| >= 1, as a new user writes it (and ``stationary``, the fixed model).
- :mod:`models.multimodal`: multimodal and curved targets for boosting VI.
- :mod:`models.cone`: the noisy cone, a ring-shaped posterior, with a hierarchical guide
  for the HVI family of objectives.
- :mod:`models.gaussian_mixture`: a 1-d Gaussian mixture with discrete assignments.
- :mod:`models.sigmoid_belief_net`: a sigmoid belief net with binary latents on the digits.
- :mod:`models.vae`: a variational autoencoder on the digits, with an amortized guide.
- :mod:`models.optimal_transport`: shuffled regression (a Sinkhorn-relaxed matching) and a
  Sinkhorn-divergence likelihood for point clouds.
- :mod:`models.implicit_regression`: a model whose mean solves an inner logistic regression
  (implicit differentiation through ``vx.solvers.custom_root``).
- :mod:`models.probit_regression`: probit regression on the breast-cancer data.
- :mod:`models.stochastic_volatility`: a stochastic-volatility model of daily returns.
- :mod:`models.cox_process`: a log-Gaussian Cox process on a 1-D grid (a centered GP).
- :mod:`models.item_response`: a Rasch item-response model.
- :mod:`models.funnel`: Neal's funnel.
- :mod:`models.robust_regression`: Student-t regression with unknown degrees of freedom.
- :mod:`models.lorenz`: a stochastic Lorenz-63 bridge with unknown noise scales.
- :mod:`models.suite`: the posterior-quality reference suite built from these models.
"""
