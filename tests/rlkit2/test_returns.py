"""GAE / n-step / lambda-returns against values computed by hand (T=3, one env)."""

import pytest
import torch

from rlkit2.returns import discounted_returns, gae, lambda_returns, n_step_returns, next_values_from, polyak_update

R = torch.tensor([[1.0], [2.0], [3.0]])
V = torch.tensor([[0.5], [1.0], [1.5]])
LAST = torch.tensor([2.0])
NO = torch.zeros(3, 1, dtype=torch.bool)


def flags(*rows):
    out = torch.zeros(3, 1, dtype=torch.bool)
    for r in rows:
        out[r] = True
    return out


def test_next_values_bootstrap_from_final_obs_on_truncation():
    final = torch.tensor([[0.0], [5.0], [0.0]])
    nv = next_values_from(V, LAST, flags(1), final)
    assert nv.flatten().tolist() == [1.0, 5.0, 2.0]


def test_gae_no_episode_end():
    # delta = [1.4, 2.35, 3.3]; A2 = 3.3; A1 = 2.35 + .72 * 3.3; A0 = 1.4 + .72 * A1  (gamma .9, lambda .8)
    nv = next_values_from(V, LAST, NO, torch.zeros(3, 1))
    adv = gae(R, V, nv, NO, NO, gamma=0.9, lam=0.8)
    assert adv.flatten().tolist() == pytest.approx([4.80272, 4.726, 3.3])
    assert lambda_returns(R, V, nv, NO, NO, 0.9, 0.8).flatten().tolist() == pytest.approx([5.30272, 5.726, 4.8])


def test_gae_termination_stops_bootstrap_and_recursion():
    term = flags(1)
    nv = next_values_from(V, LAST, NO, torch.zeros(3, 1))
    adv = gae(R, V, nv, term, term, gamma=0.9, lam=0.8)
    # delta1 = 2 - 1 = 1 (no bootstrap); A0 = 1.4 + .72 * 1
    assert adv.flatten().tolist() == pytest.approx([2.12, 1.0, 3.3])


def test_gae_truncation_bootstraps_from_final_value():
    trunc = flags(1)
    nv = next_values_from(V, LAST, trunc, torch.tensor([[0.0], [5.0], [0.0]]))
    adv = gae(R, V, nv, NO, trunc, gamma=0.9, lam=0.8)
    # delta1 = 2 + .9 * 5 - 1 = 5.5 ; A0 = 1.4 + .72 * 5.5 ; A2 unaffected (new episode)
    assert adv.flatten().tolist() == pytest.approx([5.36, 5.5, 3.3])


def test_gae_lambda_one_is_monte_carlo_plus_bootstrap():
    nv = next_values_from(V, LAST, NO, torch.zeros(3, 1))
    adv = gae(R, V, nv, NO, NO, gamma=0.9, lam=1.0)
    mc = torch.tensor([1 + .9 * 2 + .81 * 3 + .729 * 2.0, 2 + .9 * 3 + .81 * 2.0, 3 + .9 * 2.0])
    assert (adv.flatten() + V.flatten()).tolist() == pytest.approx(mc.tolist())


def test_n_step_returns_by_hand():
    nv = next_values_from(V, LAST, NO, torch.zeros(3, 1))
    g = n_step_returns(R, nv, NO, NO, gamma=0.9, n=2)
    assert g.flatten().tolist() == pytest.approx([4.015, 6.32, 4.8])
    term = flags(1)
    g = n_step_returns(R, nv, term, term, gamma=0.9, n=2)
    assert g.flatten().tolist() == pytest.approx([2.8, 2.0, 4.8])
    g_all = n_step_returns(R, nv, NO, NO, gamma=0.9, n=0)
    assert g_all.flatten().tolist() == pytest.approx([6.688, 6.32, 4.8])


def test_n_step_truncation_bootstraps_final_value():
    trunc = flags(0)
    nv = next_values_from(V, LAST, trunc, torch.tensor([[7.0], [0.0], [0.0]]))
    g = n_step_returns(R, nv, NO, trunc, gamma=0.9, n=3)
    assert g[0].item() == pytest.approx(1 + 0.9 * 7.0)


def test_n_step_equals_gae_lambda_one_when_n_covers_rollout():
    torch.manual_seed(0)
    r, v = torch.randn(6, 4), torch.randn(6, 4)
    ends = torch.rand(6, 4) < 0.2
    term = ends & (torch.rand(6, 4) < 0.5)
    nv = next_values_from(v, torch.randn(4), ends & ~term, torch.randn(6, 4))
    g = n_step_returns(r, nv, term, ends, gamma=0.95, n=0)
    torch.testing.assert_close(g, lambda_returns(r, v, nv, term, ends, 0.95, 1.0))


def test_discounted_returns_reset_at_episode_end():
    g = discounted_returns(R, flags(0), gamma=0.5)
    assert g.flatten().tolist() == pytest.approx([1.0, 2 + 0.5 * 3, 3.0])


def test_polyak_update():
    src, tgt = torch.nn.Linear(1, 1), torch.nn.Linear(1, 1)
    with torch.no_grad():
        src.weight.fill_(1.0), tgt.weight.fill_(0.0), src.bias.fill_(2.0), tgt.bias.fill_(4.0)
    polyak_update(tgt, src, tau=0.25)
    assert tgt.weight.item() == pytest.approx(0.25) and tgt.bias.item() == pytest.approx(3.5)
