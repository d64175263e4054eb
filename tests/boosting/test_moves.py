"""Away, pairwise and fully corrective moves: weight leaves a useless component."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from boosting_targets import member, std_normal, wasteful_mixture

import vi_ext as vx
from vi_ext.boosting import away
from vi_ext.boosting.moves import away_move, pairwise_move
from vi_ext.boosting.steps import Adaptive, LineSearch

RULES = [LineSearch(), Adaptive()]


@pytest.mark.parametrize("rule", RULES, ids=["line_search", "adaptive"])
def test_an_away_step_drops_a_useless_component(rule):
    # q = 0.9 N(0, 1) + 0.1 N(8, 0.5^2) for p = N(0, 1): the second component is all waste
    move = away_move(std_normal, wasteful_mixture(), -1.0, rule, 2, None,
                     jax.random.PRNGKey(0), vx.boosting.Settings())
    assert move.kind == "drop" and abs(move.step.gamma - 0.1 / 0.9) < 1e-5
    np.testing.assert_array_equal(np.asarray(move.mixture.weights), [1.0, 0.0, 0.0])
    assert move.f_after < move.f_before


@pytest.mark.parametrize("rule", RULES, ids=["line_search", "adaptive"])
def test_a_pairwise_step_moves_the_wasted_weight_to_the_new_component(rule):
    # the new component s = N(0.1, 1) (slot 2) is good: all of the waste's weight moves there
    move = pairwise_move(std_normal, wasteful_mixture(), 2, member([0.1], [1.0]), rule, 2,
                         None, jax.random.PRNGKey(0), vx.boosting.Settings())
    assert move.kind == "pairwise_drop" and abs(move.step.gamma - 0.1) < 1e-5
    np.testing.assert_allclose(np.asarray(move.mixture.weights), [0.9, 0.0, 0.1], atol=1e-6)
    assert move.f_after < move.f_before


def test_fully_corrective_weights_stay_on_the_simplex_and_improve_the_objective():
    mix = wasteful_mixture()
    mix = mix.replace(log_weights=jnp.log(jnp.array([0.5, 0.5, 0.0])))
    draws = away.component_draws(std_normal, mix, jax.random.PRNGKey(1), n=512)
    lw = away.corrective_log_weights(draws, mix.log_weights)
    w = np.exp(np.asarray(lw))
    assert abs(w.sum() - 1.0) < 1e-6 and w[2] == 0.0 and w[0] > 0.99
    assert float(away.objective(draws, lw)) < float(away.objective(draws, mix.log_weights))
