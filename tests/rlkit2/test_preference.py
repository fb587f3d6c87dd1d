"""Learning from preferences (rlkit2/preference.py): the Bradley-Terry loss with the 10% random-answer term and
ties against hand-computed values, disagreement-based selection, the synthetic oracle, the label schedule,
and the reward ensemble learning HalfCheetah's forward velocity from synthetic labels on recorded segments."""

import math

import numpy as np
import pytest
import torch

import envs
from rlkit2.preference import (EnsembleTrainer, RewardEnsemble, SyntheticOracle, bradley_terry_loss, disagreement,
                               fill_stack_padding, labels_due, select_pairs)

SIGMOID_2 = 1.0 / (1.0 + math.exp(-2.0))  # 0.88079707797788


def test_bradley_terry_loss_with_noise_and_ties_matches_hand_computed_values():
    r1, r2 = torch.tensor([2.0, 0.0, 1.0]), torch.tensor([0.0, 0.0, 3.0])
    mu = torch.tensor([1.0, 0.5, 0.0])  # left preferred, tie, right preferred
    p_right_answer = 0.9 * SIGMOID_2 + 0.05  # 0.84271737: the 10% random answers cap the confidence
    expected = (-math.log(p_right_answer) + -math.log(0.5) + -math.log(p_right_answer)) / 3
    assert bradley_terry_loss(r1, r2, mu, noise=0.1).item() == pytest.approx(expected, rel=1e-6)
    expected_no_noise = (-math.log(SIGMOID_2) + math.log(2.0) + -math.log(SIGMOID_2)) / 3
    assert bradley_terry_loss(r1, r2, mu, noise=0.0).item() == pytest.approx(expected_no_noise, rel=1e-6)


def test_noise_bounds_the_loss_of_a_confident_wrong_prediction():
    loss = bradley_terry_loss(torch.tensor([100.0]), torch.tensor([0.0]), torch.tensor([0.0]), noise=0.1)
    assert loss.item() == pytest.approx(-math.log(0.05), rel=1e-5)  # not 100: the rater may have answered at random
    grad_r = torch.tensor([0.3], requires_grad=True)
    bradley_terry_loss(grad_r, torch.tensor([0.0]), torch.tensor([0.5]), noise=0.1).backward()
    # d/dR [-(.5 log P' + .5 log(1 - P'))] = -.9 s(1-s) (.5 / P' - .5 / (1 - P')), s = sigmoid(.3)
    s = 1 / (1 + math.exp(-0.3))
    p = 0.9 * s + 0.05
    assert grad_r.grad.item() == pytest.approx(-0.9 * s * (1 - s) * (0.5 / p - 0.5 / (1 - p)), rel=1e-5)


def test_selection_picks_the_pairs_the_ensemble_disagrees_on():
    r1 = torch.tensor([[1.0, 0.0, 5.0, 2.0], [1.1, 0.0, -5.0, 2.0], [0.9, 0.0, 5.0, -1.0]])  # [E=3, P=4]
    r2 = torch.zeros(3, 4)
    # pair 2: members predict sigmoid(5), sigmoid(-5), sigmoid(5) -> most spread; pair 3 next; pair 1 none
    assert select_pairs(r1, r2, 2).tolist() == [2, 3]
    d = disagreement(r1, r2)
    s5 = 1 / (1 + math.exp(-5))
    expected = np.var([s5, 1 - s5, s5])
    assert d[2].item() == pytest.approx(expected, rel=1e-5) and d[1].item() == 0.0


def test_synthetic_oracle_prefers_the_higher_true_return_and_ties_equal_ones():
    oracle = SyntheticOracle()
    np.testing.assert_array_equal(oracle(np.array([3.0, 1.0, 2.0]), np.array([1.0, 3.0, 2.0])), [1.0, 0.0, 0.5])
    noisy = SyntheticOracle(temperature=1.0, seed=0)
    labels = noisy(np.full(20000, 1.0), np.zeros(20000))
    assert labels.mean() == pytest.approx(1 / (1 + math.exp(-1.0)), abs=0.01)  # Boltzmann-rational rater


def test_label_schedule_front_loads_a_quarter_then_decays():
    assert labels_due(0, 1400, 500_000) == 350
    assert labels_due(500_000, 1400, 500_000) == 1400 and labels_due(900_000, 1400, 500_000) == 1400
    due = [labels_due(t, 1400, 500_000, tau=100_000) for t in range(0, 500_001, 50_000)]
    assert due == sorted(due)
    increments = np.diff(due)
    assert increments[0] > increments[-1]  # a decaying rate ~ tau / (t + tau)


def test_label_schedule_with_an_initial_count_and_a_rate_lowered_in_stretches_matches_hand_computed_values():
    """The paper's Atari schedule: a number of labels up front (500), then a rate ~ tau / (t + tau) lowered only
    every ``rate_every`` steps. tau = rate_every = 100, 300 steps: the rate is 1, 1/2, 1/3 in the three stretches,
    so the 900 later labels come in shares 100 : 50 : 33.3 of 183.3, linearly within each stretch."""
    due = lambda t: labels_due(t, 1000, 300, tau=100, initial_labels=100, rate_every=100)  # noqa: E731
    total_grown = 100 + 50 + 100 / 3
    for t, grown in [(0, 0), (50, 50), (100, 100), (150, 125), (200, 150), (250, 150 + 50 / 3), (299, 150 + 99 / 3)]:
        assert due(t) == 100 + int(900 * grown / total_grown), t
    assert due(300) == 1000
    assert labels_due(0, 5500, 10_000_000, initial_labels=500, tau=1.25e6, rate_every=1_250_000) == 500
    assert labels_due(0, 1400, 500_000, initial_share=0.25, initial_labels=0) == 350  # 0: the share
    with pytest.raises(ValueError, match=r"initial labels \(600\) must be in \[0, total = 500\]"):
        labels_due(0, 500, 1000, initial_labels=600)


def _halfcheetah_segments(count: int, length: int, seed: int):
    """Random-action segments of HalfCheetah-v5 and the known reward to learn: the forward velocity in the
    observation (obs[8], the torso's x velocity), a function of what the reward model sees."""
    env = envs.make("HalfCheetah-v5", 8, seed=seed, backend="sync")
    rng = np.random.default_rng(seed)
    obs, _ = env.reset(seed=seed)
    rows_obs, rows_act, rows_vel = [], [], []
    for _ in range(count * length // 8 + length):
        action = rng.uniform(-1, 1, (8, 6)).astype(np.float32)
        next_obs, _, _, _, _ = env.step(action)
        rows_obs.append(obs)
        rows_act.append(action)
        rows_vel.append(obs[:, 8])
        obs = next_obs
    o, a, v = (np.stack(x, 1) for x in (rows_obs, rows_act, rows_vel))  # [8, steps, ...]
    starts = rng.integers(0, o.shape[1] - length, count)
    which = rng.integers(0, 8, count)
    seg = lambda x: torch.as_tensor(np.stack([x[w, s:s + length] for w, s in zip(which, starts)]))
    return seg(o), seg(a), seg(v)


def test_reward_ensemble_learns_forward_velocity_from_synthetic_labels():
    torch.manual_seed(0)
    obs, act, vel = _halfcheetah_segments(2000, 25, seed=0)
    pairs = 800  # with 40 fits: Spearman 0.88-0.92 over torch seeds 0-2 when written
    first, second = np.arange(pairs), np.arange(pairs, 2 * pairs)
    mu = torch.as_tensor(SyntheticOracle()(vel[first].sum(1).numpy(), vel[second].sum(1).numpy()))
    model = RewardEnsemble((17,), 6, members=3)
    trainer = EnsembleTrainer(model, lr=1e-3, batch_size=32)
    ids = np.arange(pairs)
    for _ in range(40):
        report = trainer.fit(obs[first], act[first], obs[second], act[second], mu, ids, epochs=1)
    assert report.accuracy > 0.8 and len(report.l2) == 3
    held_obs, held_act, held_vel = obs[2 * pairs:].flatten(0, 1), act[2 * pairs:].flatten(0, 1), vel[2 * pairs:].flatten()
    fitted_rows = model.fit_normalization(held_obs, held_act)
    predicted = model.reward(held_obs, held_act)
    torch.testing.assert_close(fitted_rows, predicted)  # the fit returns the rows' reward from its own pass
    assert predicted.mean().abs() < 1e-4 and predicted.std().item() == pytest.approx(1.0, rel=1e-3)  # normalised
    ranks = lambda x: torch.as_tensor(np.argsort(np.argsort(x.numpy()))).float()
    spearman = np.corrcoef(ranks(predicted), ranks(held_vel))[0, 1]
    assert spearman > 0.8, spearman


def test_a_pair_stays_in_or_out_of_each_members_bootstrap_as_the_data_grows_and_old_pairs_go():
    model = RewardEnsemble((3,), 1, members=4)
    trainer = EnsembleTrainer(model, seed=0)
    seg = lambda n: (torch.randn(n, 5, 3), torch.randn(n, 5, 1))  # noqa: E731
    (o1, a1), (o2, a2) = seg(300), seg(300)
    mu = torch.randint(0, 2, (300,)).float()
    trainer.fit(o1[:200], a1[:200], o2[:200], a2[:200], mu[:200], np.arange(200), epochs=1)
    before = dict(zip(trainer.ids.tolist(), trainer.counts.T.tolist()))
    assert 0.25 < (trainer.counts == 0).mean() < 0.5  # about 1/e of the pairs are each member's validation set
    trainer.fit(o1[100:], a1[100:], o2[100:], a2[100:], mu[100:], np.arange(100, 300), epochs=1)  # FIFO: 0..99 gone
    after = dict(zip(trainer.ids.tolist(), trainer.counts.T.tolist()))
    assert all(after[i] == before[i] for i in range(100, 200)) and set(after) == set(range(100, 300))


def test_fit_reports_each_members_loss_on_its_own_bootstrap_and_held_out_pairs():
    """Atari-style: a CNN ensemble on compactly stored stacked frames. The report's losses and accuracy must be
    member e's Bradley-Terry loss on the pairs in its resample (train) and on those left out (validation)."""
    from rlkit2.preference import StackedSegments

    torch.manual_seed(0)
    P, K, S = 12, 3, 4
    model = RewardEnsemble((S, 44, 44), 3, members=3)
    trainer = EnsembleTrainer(model, seed=0)
    o1, o2 = (StackedSegments(torch.randint(0, 255, (P, K + S - 1, 44, 44), dtype=torch.uint8), S) for _ in range(2))
    a1, a2 = (torch.nn.functional.one_hot(torch.randint(0, 3, (P, K)), 3) for _ in range(2))
    mu = torch.tensor([0.0, 1.0, 0.5] * 4)
    report = trainer.fit(o1, a1, o2, a2, mu, np.arange(P), epochs=1)
    model.eval()
    with torch.no_grad():
        r1, r2 = trainer.segment_returns(o1[torch.arange(P)], a1), trainer.segment_returns(o2[torch.arange(P)], a2)
    torch.testing.assert_close(trainer._all_returns(o1, a1, np.arange(P), chunk=5), r1)  # in chunks, same scores
    correct = total = 0
    for e in range(3):
        train, val = np.flatnonzero(trainer.counts[e] > 0), np.flatnonzero(trainer.counts[e] == 0)
        assert len(train) and len(val)
        assert report.train_loss[e] == pytest.approx(float(bradley_terry_loss(r1[e, train], r2[e, train], mu[train])),
                                                     rel=1e-5)
        assert report.val_loss[e] == pytest.approx(float(bradley_terry_loss(r1[e, val], r2[e, val], mu[val])), rel=1e-5)
        predicted = (r1[e, val] > r2[e, val]).float() + 0.5 * (r1[e, val] == r2[e, val]).float()
        correct += float((1 - (predicted - mu[val]).abs()).sum())
        total += len(val)
    assert report.accuracy == pytest.approx(correct / total)


def test_a_fixed_budget_fit_takes_that_many_steps_and_scores_a_random_subset_of_pairs(monkeypatch):
    """batches=3: three Adam steps whatever the number of comparisons (epochs ignored); eval_pairs=20: the
    report's losses are each member's Bradley-Terry loss on its own train / held-out pairs among 20 scored ones."""
    torch.manual_seed(0)
    model = RewardEnsemble((3,), 1, members=3)
    trainer = EnsembleTrainer(model, batch_size=8, seed=0)
    o1, a1, o2, a2 = torch.randn(100, 5, 3), torch.randn(100, 5, 1), torch.randn(100, 5, 3), torch.randn(100, 5, 1)
    mu = torch.randint(0, 2, (100,)).float()
    scored = []
    real = trainer._all_returns
    monkeypatch.setattr(trainer, "_all_returns", lambda o, a, which: scored.append(which) or real(o, a, which))
    report = trainer.fit(o1, a1, o2, a2, mu, np.arange(100), epochs=7, batches=3, eval_pairs=20)
    assert all(state["step"] == 3 for state in trainer.opt.state.values())
    which = scored[0]
    assert len(which) == 20 and len(set(which.tolist())) == 20 and np.array_equal(scored[1], which)
    with torch.no_grad():
        r1, r2 = trainer.segment_returns(o1[which], a1[which]), trainer.segment_returns(o2[which], a2[which])
    for e in range(3):
        train, val = np.flatnonzero(trainer.counts[e, which] > 0), np.flatnonzero(trainer.counts[e, which] == 0)
        m = mu[which]
        assert report.train_loss[e] == pytest.approx(float(bradley_terry_loss(r1[e, train], r2[e, train], m[train])),
                                                     rel=1e-5)
        assert report.val_loss[e] == pytest.approx(float(bradley_terry_loss(r1[e, val], r2[e, val], m[val])), rel=1e-5)
    trainer.fit(o1, a1, o2, a2, mu, np.arange(100), epochs=1)  # a full epoch: ceil(n / 8) more steps
    n = min(int(c.sum()) for c in trainer.counts)
    assert all(state["step"] == 3 + -(-n // 8) for state in trainer.opt.state.values())
    with pytest.raises(ValueError, match="batches"):
        trainer.fit(o1, a1, o2, a2, mu, np.arange(100), batches=-1)


def test_bf16_conv_members_compute_the_fp32_rewards_to_bf16_rounding():
    torch.manual_seed(0)
    fp32 = RewardEnsemble((4, 44, 44), 3, members=2)
    bf16 = RewardEnsemble((4, 44, 44), 3, members=2, precision="bf16")
    bf16.load_state_dict(fp32.state_dict())
    obs = torch.randint(0, 255, (16, 4, 44, 44), dtype=torch.uint8)
    actions = torch.nn.functional.one_hot(torch.randint(0, 3, (16,)), 3)
    with torch.no_grad():
        exact, rounded = fp32(obs, actions), bf16(obs, actions)
    assert rounded.dtype == torch.float32 and all(p.dtype == torch.float32 for p in bf16.parameters())
    assert not torch.equal(exact, rounded)  # it did run in bf16
    torch.testing.assert_close(rounded, exact, rtol=0.05, atol=0.02 * exact.abs().max().item())
    with pytest.raises(ValueError, match="precision"):
        RewardEnsemble((4, 44, 44), 3, precision="fp16")


def test_reset_padding_of_a_frame_stack_is_filled_with_the_oldest_real_frame():
    a, b, c = (torch.full((2, 2), v, dtype=torch.uint8) for v in (7, 8, 9))
    zero = torch.zeros(2, 2, dtype=torch.uint8)
    stacks = torch.stack([torch.stack([zero, zero, zero, a]),  # the first step of an episode
                          torch.stack([zero, zero, a, b]),
                          torch.stack([a, zero, b, c]),        # a black frame inside the stack: only padding before it
                          torch.stack([a, b, c, zero])])       # a black newest frame is real: kept
    filled = fill_stack_padding(stacks)
    expected = torch.stack([torch.stack([a, a, a, a]), torch.stack([a, a, a, b]), torch.stack([a, b, b, c]),
                            torch.stack([a, b, c, zero])])
    assert torch.equal(filled, expected)
    assert stacks[0, 0].max() == 0  # the input is not modified
    full = torch.stack([torch.stack([a, b, c, a])])
    assert fill_stack_padding(full) is full  # nothing to fill: no copy


def test_a_frame_stack_reward_model_scores_a_padded_stack_as_the_repeated_first_frame():
    """After a reset our Atari stacks hold zeros where the paper's (openai baselines) hold copies of the first frame;
    the reward model must score them alike, in the RL agent's rewards and in segment returns."""
    torch.manual_seed(0)
    model = RewardEnsemble((4, 44, 44), 3, members=2, frame_stack=True).eval()
    first = torch.randint(1, 255, (44, 44), dtype=torch.uint8)
    padded = torch.stack([torch.zeros_like(first)] * 3 + [first])[None]
    repeated = first.expand(4, 44, 44)[None]
    action = torch.nn.functional.one_hot(torch.tensor([1]), 3)
    with torch.no_grad():
        torch.testing.assert_close(model(padded, action), model(repeated, action))
        trainer = EnsembleTrainer(model)
        segment = torch.stack([padded, repeated], 1)  # [P=1, K=2, 4, 44, 44]
        returns = trainer.member_returns(segment.expand(2, 1, 2, 4, 44, 44), action.expand(2, 1, 2, 3))
        torch.testing.assert_close(returns[:, 0], 2 * model(repeated, action)[:, 0])
    plain = RewardEnsemble((4, 44, 44), 3, members=2).eval()
    plain.load_state_dict(model.state_dict())
    with torch.no_grad():
        assert not torch.allclose(plain(padded, action), plain(repeated, action))  # channels left as they are
    with pytest.raises(ValueError, match="frame_stack"):
        RewardEnsemble((17,), 3, frame_stack=True)


def test_a_reward_model_without_actions_ignores_them_everywhere():
    torch.manual_seed(0)
    for shape in ((4, 44, 44), (5,)):
        model = RewardEnsemble(shape, 3, members=2, use_actions=False).eval()
        obs = torch.randint(0, 255, (6, *shape), dtype=torch.uint8) if len(shape) == 3 else torch.randn(6, *shape)
        left, right = (torch.nn.functional.one_hot(torch.full((6,), k), 3) for k in (0, 2))
        with torch.no_grad():
            torch.testing.assert_close(model(obs, left), model(obs, right))
            segments = obs.view(1, 2, 3, *shape).expand(2, 2, 3, *shape)  # [E, P, K, ...]
            returns = EnsembleTrainer(model).member_returns(segments, left.view(1, 2, 3, 3).expand(2, 2, 3, 3))
            torch.testing.assert_close(returns, model(obs, right).view(2, 2, 3).sum(-1))
    with_actions = RewardEnsemble((5,), 3, members=2).eval()
    with torch.no_grad():
        assert not torch.allclose(with_actions(obs, left), with_actions(obs, right))


def test_clip_bounds_the_reward_and_trim_keeps_outliers_out_of_the_normalisation():
    """One member r(o) = o: 98 rows at -1 / +1 alternating and two outliers at 50. Without guards the outliers set
    the std (~7.1); with trim 0.03 the statistics come from the winsorised rows (the outliers count as +1: mean
    0.02, std ~1.0) and with clip 3 the outliers' reward is 3 std."""
    o = torch.tensor([-1.0, 1.0] * 49 + [50.0, 50.0])[:, None]
    a = torch.zeros(100, 0)
    plain = RewardEnsemble((1,), 0, members=1, hidden=())
    guarded = RewardEnsemble((1,), 0, members=1, hidden=(), clip=3.0, trim=0.03)
    for m in (plain, guarded):
        with torch.no_grad():
            m.mlp.weights[0].fill_(1.0)
            m.mlp.biases[0].zero_()
    plain.fit_normalization(o, a)
    assert plain.out_std.item() == pytest.approx(o.std().item(), rel=1e-5)
    rewards = guarded.fit_normalization(o, a)
    winsorised = torch.tensor([-1.0, 1.0] * 49 + [1.0, 1.0])
    assert guarded.out_mean.item() == pytest.approx(0.02, abs=1e-6)
    assert guarded.out_std.item() == pytest.approx(winsorised.std().item(), rel=1e-5)
    z_normal = (1.0 - 0.02) / winsorised.std().item()
    torch.testing.assert_close(guarded.reward(torch.tensor([[1.0], [50.0]]), torch.zeros(2, 0)),
                               torch.tensor([z_normal, 3.0]))
    assert rewards.max().item() == pytest.approx(3.0) and rewards.min().item() > -3.0
    with pytest.raises(ValueError, match="trim"):
        RewardEnsemble((1,), 0, trim=0.5)


def test_adaptive_l2_moves_towards_the_target_ratio_within_bounds():
    model = RewardEnsemble((3,), 1, members=2)
    trainer = EnsembleTrainer(model, seed=0, l2_init=1e-2, l2_bounds=(1e-3, 2e-2), l2_step=2.0)
    o, a = torch.randn(40, 5, 3), torch.randn(40, 5, 1)
    mu = torch.randint(0, 2, (40,)).float()  # random labels: held-out loss far above training loss after fitting
    for _ in range(30):
        report = trainer.fit(o, a, o.flip(0), a.flip(0), mu, np.arange(40), epochs=5)
    assert all(l2 == 2e-2 for l2 in report.l2)  # overfitting pushed L2 up, to the upper bound and no further


def test_stacked_segments_keep_distinct_frames_and_rebuild_the_stacks():
    from rlkit2.preference import StackedSegments

    rng = np.random.default_rng(0)
    P, K, S = 5, 6, 4
    frames = torch.as_tensor(rng.integers(0, 255, (P, K + S - 1, 3, 2)), dtype=torch.uint8)
    stacks = torch.stack([torch.stack([frames[p, t:t + S] for t in range(K)]) for p in range(P)])  # [P, K, S, 3, 2]
    compact = StackedSegments.compact(stacks)
    assert torch.equal(compact, frames) and compact.numel() * K * S == stacks.numel() * (K + S - 1)
    view = StackedSegments(compact, S)
    assert len(view) == P
    assert torch.equal(view[torch.tensor([3, 0, 3])], stacks[[3, 0, 3]])
    idx = torch.tensor([[1, 2], [4, 4]])  # [members, batch], as the ensemble trainer indexes
    assert torch.equal(view[idx], stacks[idx])
    broken = stacks.clone()
    broken[2, 3, 0] += 1  # step 3's oldest frame is not step 2's second oldest
    with pytest.raises(ValueError, match="do not share their stacked frames"):
        StackedSegments.compact(broken)


# ------------------------------------------------ the Atari model's batch norm and dropout (paper App. A.2)
def _frames(n: int, size: int = 84, seed: int = 0) -> torch.Tensor:
    return torch.randint(0, 255, (n, 4, size, size), dtype=torch.uint8, generator=torch.Generator().manual_seed(seed))


def test_the_atari_reward_model_has_batch_norm_and_dropout_after_every_conv_in_the_papers_order():
    """App. A.2: convs 7x7/3, 5x5/2, 3x3/1, 3x3/1 of 16 filters with leaky ReLU (0.01); "all convolutional layers use
    batch norm and dropout with alpha = 0.5"; then FC 64 and a scalar. Per conv: conv, batch norm, leaky ReLU,
    dropout (mrahtz/learning-from-human-preferences' order). Off: the model as it was before (its checkpoints)."""
    from torch import nn

    model = RewardEnsemble((4, 84, 84), 6, members=2, use_actions=False)
    for net in model.nets:
        layers = list(net.convs)
        assert isinstance(layers[-1], nn.Flatten) and len(layers) == 4 * 4 + 1
        for i, (k, stride) in enumerate([(7, 3), (5, 2), (3, 1), (3, 1)]):
            conv, bn, act, drop = layers[4 * i:4 * i + 4]
            assert isinstance(conv, nn.Conv2d) and conv.kernel_size == (k, k) and conv.stride == (stride, stride)
            assert conv.out_channels == 16 and isinstance(bn, nn.BatchNorm2d) and bn.num_features == 16
            assert isinstance(act, nn.LeakyReLU) and act.negative_slope == 0.01
            assert isinstance(drop, nn.Dropout) and drop.p == 0.5
        head = list(net.head)
        assert head[0].in_features == 16 * 7 * 7 and head[0].out_features == 64 and head[2].out_features == 1
    assert model.nets[0].convs[1] is not model.nets[1].convs[1]  # each member its own statistics
    plain = RewardEnsemble((4, 84, 84), 6, members=1, batch_norm=False, dropout=0.0)
    assert [type(m).__name__ for m in plain.nets[0].convs] == ["Conv2d", "LeakyReLU", "Dropout"] * 4 + ["Flatten"]
    mlp = RewardEnsemble((5,), 2, members=2)  # the paper's MuJoCo MLP has neither
    assert not any(isinstance(m, (nn.BatchNorm1d, nn.Dropout)) for m in mlp.modules()) and not mlp.batch_norm
    with pytest.raises(ValueError, match=r"dropout must be in \[0, 1\)"):
        RewardEnsemble((4, 84, 84), 6, dropout=1.0)


def test_scoring_is_deterministic_in_eval_mode_and_dropout_acts_only_in_train_mode():
    torch.manual_seed(0)
    model = RewardEnsemble((4, 84, 84), 6, members=2, use_actions=False)
    obs, actions = _frames(4), torch.zeros(4, 6)
    assert not model.training  # the model rests in eval mode
    with torch.no_grad():
        torch.testing.assert_close(model(obs, actions), model(obs, actions), rtol=0, atol=0)
        model.train()
        assert not torch.equal(model(obs, actions), model(obs, actions))  # dropout (and batch statistics)
        eval_rewards = model.reward(obs, actions)  # a scoring path: eval mode whatever the module's mode ...
        torch.testing.assert_close(model.reward(obs, actions), eval_rewards, rtol=0, atol=0)
        assert model.training and all(m.training for m in model.modules())  # ... and the mode is restored
        returns = EnsembleTrainer(model).segment_returns(obs.view(2, 2, 4, 84, 84), actions.view(2, 2, 6))
        assert model.training
        fitted = model.fit_normalization(obs, actions)
        assert model.training
        model.eval()
        torch.testing.assert_close(model.reward(obs, actions), fitted, rtol=0, atol=0)
        torch.testing.assert_close(returns, model(obs, actions).view(2, 2, 2).sum(-1))


def _fitted_conv_ensemble(precision: str = "fp32"):
    """A 2-member conv ensemble after one epoch on 8 random comparisons of 3-step segments (44x44 frames)."""
    torch.manual_seed(0)
    model = RewardEnsemble((4, 44, 44), 3, members=2, precision=precision)
    trainer = EnsembleTrainer(model, batch_size=4, seed=0)
    o1, o2 = torch.randint(0, 255, (2, 8, 3, 4, 44, 44), dtype=torch.uint8)
    a1, a2 = (torch.nn.functional.one_hot(torch.randint(0, 3, (8, 3)), 3) for _ in range(2))
    mu = torch.tensor([0.0, 1.0] * 4)
    return model, trainer, (o1, a1, o2, a2, mu, np.arange(8))


def test_a_fit_trains_batch_norm_statistics_per_member_and_leaves_the_model_in_eval_mode():
    model, trainer, data = _fitted_conv_ensemble()
    before = [net.convs[1].running_mean.clone() for net in model.nets]
    seen = []
    real_step = trainer._step
    trainer._step = lambda *a: seen.append(model.training) or real_step(*a)  # noqa: E731
    trainer.fit(*data, epochs=1)
    assert seen and all(seen)  # every step in train mode
    assert not model.training and not any(m.training for m in model.modules())  # back in eval mode for scoring
    after = [net.convs[1].running_mean for net in model.nets]
    assert all(not torch.equal(b, a) for b, a in zip(before, after))  # the running statistics learned
    assert not torch.equal(after[0], after[1])  # each member from its own bootstrap batches
    assert all(net.convs[1].num_batches_tracked > 0 for net in model.nets)
    weights = [m.weight for m in model.nets[0].modules() if isinstance(m, (torch.nn.Conv2d, torch.nn.Linear))]
    assert len(weights) == 4 + 2  # the L2 term: conv and linear weights, not batch norm's scale
    assert trainer._member_sq_norm(0).item() == pytest.approx(sum(w.square().sum().item() for w in weights))


def test_batch_norm_statistics_are_restored_by_save_and_load_and_old_states_get_a_clear_error():
    model, trainer, data = _fitted_conv_ensemble()
    trainer.fit(*data, epochs=1)
    obs, actions = _frames(4, 44), torch.zeros(4, 3)
    model.fit_normalization(obs, actions)
    state = {k: v.clone() for k, v in model.state_dict().items()}
    assert any(k.endswith("running_var") for k in state)
    copy = RewardEnsemble((4, 44, 44), 3, members=2)
    copy.load_state_dict(state)
    for a, b in zip(model.nets, copy.nets):
        torch.testing.assert_close(b.convs[1].running_mean, a.convs[1].running_mean, rtol=0, atol=0)
        torch.testing.assert_close(b.convs[1].running_var, a.convs[1].running_var, rtol=0, atol=0)
    torch.testing.assert_close(copy.reward(obs, actions), model.reward(obs, actions), rtol=0, atol=0)
    old = RewardEnsemble((4, 44, 44), 3, members=2, batch_norm=False, dropout=0.0)  # the model before batch norm
    with pytest.raises(ValueError, match="no batch norm.*build it with batch_norm=False and dropout=0"):
        copy.load_state_dict(old.state_dict())
    with pytest.raises(ValueError, match="has batch norm.*build it with batch_norm=True"):
        old.load_state_dict(state)
    RewardEnsemble((4, 44, 44), 3, members=2, batch_norm=False, dropout=0.0).load_state_dict(old.state_dict())


def test_in_eval_mode_a_rows_reward_does_not_depend_on_the_rest_of_its_batch():
    """Scoring uses batch norm's running statistics: row 0 scores the same alone, with other rows, or with rows of
    a very different distribution. (In train mode batch statistics would leak between rows, as checked first.)"""
    model, trainer, data = _fitted_conv_ensemble()
    trainer.fit(*data, epochs=1)
    obs, actions = _frames(4, 44, seed=1), torch.zeros(4, 3)
    bright = torch.full((3, 4, 44, 44), 250, dtype=torch.uint8)
    with torch.no_grad():
        model.train()
        for net in model.nets:
            for m in net.modules():
                if isinstance(m, torch.nn.Dropout):
                    m.eval()  # only batch norm in train mode
        leaked = model(torch.cat([obs[:1], bright]), torch.zeros(4, 3))[:, 0]
        assert not torch.allclose(leaked, model(obs, actions)[:, 0], atol=1e-4)
        model.eval()
        alone = model.reward(obs[:1], actions[:1])
        together = model.reward(obs, actions)
        mixed = model.reward(torch.cat([obs[:1], bright]), torch.zeros(4, 3))
    torch.testing.assert_close(together[:1], alone, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(mixed[:1], alone, rtol=1e-5, atol=1e-6)


def test_a_bf16_fit_keeps_fp32_batch_norm_statistics_that_score_like_the_fp32_model():
    model, trainer, data = _fitted_conv_ensemble("bf16")
    trainer.fit(*data, epochs=1)
    bn = model.nets[0].convs[1]
    assert bn.running_mean.dtype == torch.float32 and torch.isfinite(bn.running_var).all() and not model.training
    fp32 = RewardEnsemble((4, 44, 44), 3, members=2)
    fp32.load_state_dict(model.state_dict())
    obs, actions = _frames(6, 44, seed=2), torch.zeros(6, 3)
    with torch.no_grad():
        exact, rounded = fp32(obs, actions), model(obs, actions)
    torch.testing.assert_close(rounded, exact, rtol=0.05, atol=0.05 * exact.abs().max().item())
