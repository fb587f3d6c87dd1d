"""VPN (agents/vpn.py): the d-step planning backup against brute-force enumeration on a hand-made tabular
model, the k-step loss and the SMDP returns against hand-computed values, the network's batched core against
its per-option core, learning a small Collect maze through the scripts, resume, Atari smoke, bad input."""

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

import agents.vpn as vpn_module
from agents.vpn import (RandomWindows, SameConv2d, VPNConfig, VPNNet, model_losses, option_outcome, plan,
                        rollout_pieces, smdp_returns)
from conftest import subprocess_env
from rlkit2.config import ConfigError
from rlkit2.run import resolve_config, resume, train

ROOT = Path(__file__).resolve().parents[2]
GAMMA = 0.9


class TabularModel:
    """S states, O options: reward r[s,o], duration t[s,o], next state n[s,o], value V[s]. States travel as
    one-hot rows so ``core_all`` has the network's signature."""

    def __init__(self, states: int, options: int, seed: int):
        g = torch.Generator().manual_seed(seed)
        self.r = torch.randn(states, options, generator=g)
        self.t = torch.randint(1, 4, (states, options), generator=g).float()
        self.n = torch.randint(0, states, (states, options), generator=g)
        self.v = torch.randn(states, generator=g) * 3
        self.S, self.O = states, options

    def core_all(self, s: torch.Tensor):
        idx = s.argmax(1)
        nxt = self.n[idx]
        return self.r[idx], self.t[idx], self.v[nxt], torch.nn.functional.one_hot(nxt, self.S).float()

    def brute_force(self, s: int, branch: tuple[int, ...], level: int = 0) -> dict[int, float]:
        """Q^{d-level}(s, o) for the options expanded at this level, by direct recursion."""
        d = len(branch) - level
        one_step = {o: float(self.r[s, o] + GAMMA ** self.t[s, o] * self.v[self.n[s, o]]) for o in range(self.O)}
        top = sorted(one_step, key=one_step.get, reverse=True)[:branch[level]]
        out = {}
        for o in top:
            s2 = int(self.n[s, o])
            if d == 1:
                v = float(self.v[s2])
            else:
                v = float(self.v[s2]) / d + (d - 1) / d * max(self.brute_force(s2, branch, level + 1).values())
            out[o] = float(self.r[s, o]) + GAMMA ** float(self.t[s, o]) * v
        return out


@pytest.mark.parametrize("branch", [(3,), (5, 2), (3, 2, 2), (4, 1, 3)])
def test_planning_backup_matches_brute_force_enumeration(branch):
    model = TabularModel(states=7, options=5, seed=len(branch) + sum(branch))
    roots = torch.eye(7)
    q = plan(model.core_all, roots, branch, GAMMA)
    assert q.shape == (7, 5)
    for s in range(7):
        expected = model.brute_force(s, branch)
        for o in range(5):
            if o in expected:
                assert q[s, o].item() == pytest.approx(expected[o], rel=1e-5, abs=1e-5)
            else:
                assert q[s, o].item() == float("-inf")  # not expanded at the root: never chosen


def test_depth_one_plan_is_the_one_step_q():
    model = TabularModel(states=4, options=3, seed=0)
    q = plan(model.core_all, torch.eye(4), (3,), GAMMA)
    expected = model.r + GAMMA ** model.t * model.v[model.n]
    torch.testing.assert_close(q, expected)


class ScalarNet:
    """A stand-in network with hand-checkable outputs: s = x; core(s, o): r = s + o, duration 1 + o,
    V(s') = 2 s, s' = s + 1."""

    def encode(self, obs):
        return obs.float()

    def core(self, s, options):
        o = options.float()
        return s[:, 0] + o, 1.0 + o, 2.0 * s[:, 0], s + 1.0


def test_k_step_loss_matches_hand_computed_values():
    # T = 3, one trajectory, k = 2; obs 2 starts a new episode, so the unroll from t = 1 into t = 2 is masked.
    obs = torch.tensor([0.0, 10.0, 20.0]).view(3, 1, 1)
    options = torch.tensor([[1], [0], [1]])
    rewards = torch.tensor([[1.5], [10.0], [0.0]])
    durations = torch.tensor([[2.0], [1.0], [3.0]])
    starts = torch.tensor([[False], [False], [True]])
    next_returns = torch.tensor([[4.0], [0.0], [50.0]])
    losses = model_losses(ScalarNet(), obs, options, rewards, durations, starts, next_returns, k=2)
    # t=0, l=1 from s=0:  r 1 (err -.5 -> .125), t 2 (0), v 0 vs 4 (-> 3.5)
    # t=1, l=1 from s=10: r 10 (0), t 1 (0), v 20 vs 0 (-> 19.5); l=2 from s'=1: r 1 vs 10 (-> 8.5), t 0, v 2 (-> 1.5)
    # t=2, l=1 from s=20: r 21 vs 0 (-> 20.5), t 2 vs 3 (-> .5), v 40 vs 50 (-> 9.5); l=2 masked (new episode)
    assert losses["reward"].shape == (1,)  # one sum per trajectory
    assert losses["reward"].item() == pytest.approx(0.125 + 8.5 + 20.5)
    assert losses["duration"].item() == pytest.approx(0.5)
    assert losses["value"].item() == pytest.approx(3.5 + 19.5 + 1.5 + 9.5)
    no_value = model_losses(ScalarNet(), obs, options, rewards, durations, starts, None, k=2)
    assert set(no_value) == {"reward", "duration"}


def test_k_step_loss_is_per_trajectory_and_masks_the_value_of_trajectories_without_one():
    obs = torch.tensor([[0.0, 0.0], [10.0, 10.0], [20.0, 20.0]]).view(3, 2, 1)
    options = torch.tensor([[1, 1], [0, 0], [1, 1]])
    args = (torch.tensor([[1.5, 1.5], [10.0, 10.0], [0.0, 0.0]]), torch.tensor([[2.0, 2.0], [1.0, 1.0], [3.0, 3.0]]),
            torch.tensor([[False, False], [False, False], [True, True]]), torch.tensor([[4.0, 4.0], [0.0, 0.0], [50.0, 50.0]]))
    losses = model_losses(ScalarNet(), obs, options, *args, k=2, has_value=torch.tensor([True, False]))
    torch.testing.assert_close(losses["value"], torch.tensor([34.0, 0.0]))
    torch.testing.assert_close(losses["reward"], torch.tensor([29.125, 29.125]))


def test_smdp_returns_discount_by_option_duration_and_stop_at_episode_ends():
    rewards = torch.tensor([[1.0], [2.0], [3.0]])
    discounts = torch.tensor([[0.5], [0.25], [1.0]])
    continues = torch.tensor([[True], [False], [True]])
    next_values = torch.tensor([[99.0], [0.0], [10.0]])  # [1]: after a terminal; [2]: the bootstrap
    R = smdp_returns(rewards, discounts, next_values, continues)
    torch.testing.assert_close(R[:, 0], torch.tensor([2.0, 2.0, 13.0]))  # R2 = 3 + 10, R1 = 2 + 0, R0 = 1 + .5 R1
    next_values[1] = 4.0  # a truncation: bootstrap from the final observation's value
    R = smdp_returns(rewards, discounts, next_values, continues)
    torch.testing.assert_close(R[:, 0], torch.tensor([2.5, 3.0, 13.0]))


def test_batched_core_equals_the_per_option_core():
    import envs

    env = envs.make("rlkit2/Collect-v0", 3, seed=0)
    torch.manual_seed(0)
    net = VPNNet(env.single_observation_space, 4, VPNConfig(filters=(8, 8, 16)))
    obs, _ = env.reset(seed=0)
    s = net.encode(torch.as_tensor(obs))
    r_all, t_all, v_all, s_all = net.core_all(s)
    for o in range(4):
        r, t, v, s_next = net.core(s, torch.full((3,), o))
        torch.testing.assert_close(r, r_all[:, o])
        torch.testing.assert_close(t, t_all[:, o])
        torch.testing.assert_close(v, v_all[:, o])
        torch.testing.assert_close(s_next, s_all[:, o])
    assert (t_all >= 1.0).all()  # a duration is at least one primitive step


TINY_MAZE = ["--env_kwargs.size", "6", "--env_kwargs.num_goals", "2", "--env_kwargs.max_steps", "8",
             "--env_kwargs.holes", "1"]
SMALL_NET = {"filters": "16,16,32", "branch": "4,2", "random_buffer": 2000, "num_envs": 4, "eval_episodes": 4,
             "eval_envs": 2, "progress": False, "tensorboard": False}


def test_vpn_learns_a_small_collect_maze_through_the_scripts(tmp_path):
    """Train from the real script on a 6x6 Collect maze (2 goals, 8 steps; a random policy scores about -1.3),
    then evaluate the saved checkpoint from the evaluate script."""
    quiet = ["--progress", "false", "--tensorboard", "false"]
    args = ["--agent", "vpn", "--env", "rlkit2/Collect-v0", *TINY_MAZE, "--filters", "16,16,32", "--branch", "4,2",
            "--lr", "1e-3", "--lr_decay", "1", "--eps_steps", "20000", "--target_sync", "2000", "--random_buffer",
            "20000", "--total_steps", "40000", "--eval_every", "0", "--runs_dir", str(tmp_path)]
    out = subprocess.run([sys.executable, str(ROOT / "scripts" / "train.py"), *args, *quiet], capture_output=True,
                         text=True, env=subprocess_env(), timeout=900)
    assert out.returncode == 0, out.stderr
    run_dir = Path(next(l.split(":", 1)[1].strip() for l in out.stdout.splitlines() if l.startswith("run directory")))
    config = json.loads((run_dir / "config.json").read_text())
    assert config["run"]["env_kwargs"] == {"size": 6, "num_goals": 2, "max_steps": 8, "holes": 1}
    assert config["run"]["num_envs"] == 16 and config["agent_config"]["branch"] == [4, 2]  # the preset's 16 envs
    ev = subprocess.run([sys.executable, str(ROOT / "scripts" / "evaluate.py"), str(run_dir), "--episodes", "200",
                         "--json"], capture_output=True, text=True, env=subprocess_env(), timeout=300)
    assert ev.returncode == 0, ev.stderr
    result = json.loads(ev.stdout)
    assert result["episodes"] == 200 and result["return_mean"] >= 1.0, result


def test_resume_continues_the_schedules_and_evaluates(tmp_path):
    overrides = {**SMALL_NET, "env_kwargs": {"size": 6, "num_goals": 2, "max_steps": 8}, "total_steps": 640,
                 "stop_after_steps": 320, "eval_every": 0, "runs_dir": str(tmp_path), "target_sync": 200}
    run, cfg = resolve_config("vpn", "rlkit2/Collect-v0", overrides)
    first = train(run, cfg)
    assert first.status == "interrupted" and first.env_steps == 320
    second = resume(first.run_dir, {"stop_after_steps": 0})
    assert second.status == "finished" and second.env_steps == 640
    assert np.isfinite(second.final_eval["return_mean"])
    from rlkit2 import checkpoint as ckpt

    state = ckpt.load(Path(first.run_dir) / "checkpoints" / "final.pt", map_location="cpu")["agent_state"]
    # one Adam step per episode piece of each env's 10-option rollout: at least one per rollout
    assert state["env_steps"] == 640 and state["updates"] >= 640 // 10 and state["syncs"] == 3


def test_nstep_q_baseline_trains_with_the_same_encoder():
    import envs
    from rlkit2.agent import BuildContext
    from agents.vpn import VPNAgent

    env = envs.make("rlkit2/CollectStochastic-v0", 4, seed=0)
    ctx = BuildContext(env=env, device=torch.device("cpu"), total_steps=10_000, seed=0, threads_collect=1,
                       threads_update=1)
    vpn = VPNAgent(VPNConfig(filters=(8, 8, 16), random_buffer=0), ctx)
    baseline = VPNAgent(VPNConfig(method="nstep_q", filters=(8, 8, 16)), ctx)
    assert [n for n, _ in vpn.net.encoder.named_parameters()] == [n for n, _ in baseline.net.encoder.named_parameters()]
    before = [p.clone() for p in baseline.net.parameters()]
    stats = baseline.train_iteration()
    assert stats["loss/q"] > 0 and baseline.updates >= 4 and baseline.env_steps == 40
    changed = [not torch.equal(a, b) for a, b in zip(before, baseline.net.parameters())]
    assert any(changed) and baseline.random_windows is None  # the model-free baseline has no reward model to train


def test_epsilon_greedy_plans_only_for_the_envs_that_act_greedily(monkeypatch):
    import envs
    from rlkit2.agent import BuildContext
    from agents.vpn import VPNAgent

    env = envs.make("rlkit2/Collect-v0", 6, seed=0)
    ctx = BuildContext(env=env, device=torch.device("cpu"), total_steps=100, seed=0, threads_collect=1, threads_update=1)
    agent = VPNAgent(VPNConfig(filters=(4, 4, 4), random_buffer=0), ctx)
    planned = []
    # Q prefers option 2 for every env: a greedy env picks 2; the batch planned for is recorded
    monkeypatch.setattr(agent, "q_values", lambda net, obs: planned.append(obs[:, 0, 0, 0].tolist())
                        or torch.tensor([[0.0, 0.0, 1.0, 0.0]]).repeat(len(obs), 1))
    obs = torch.arange(6, dtype=torch.uint8).view(6, 1, 1, 1).expand(6, 4, 10, 10).contiguous()
    draws = np.random.default_rng(3)
    explore, random_options = draws.random(6) < 0.5, draws.integers(0, 4, 6)
    options = agent._epsilon_greedy(obs, 0.5, np.random.default_rng(3))
    assert 0 < explore.sum() < 6  # the seed gives both kinds
    assert options.tolist() == np.where(explore, random_options, 2).tolist()
    assert planned == [np.flatnonzero(~explore).tolist()]  # one batched plan, for the greedy envs only
    planned.clear()
    all_explore = agent._epsilon_greedy(obs, 1.0, np.random.default_rng(3))
    assert planned == [] and all_explore.min() >= 0 and all_explore.max() < 4  # epsilon 1: no planning at all
    assert agent._epsilon_greedy(obs, 0.0, np.random.default_rng(3)).tolist() == [2] * 6 and planned == [list(range(6))]


@pytest.mark.parametrize("option,value", [("branch", "0,4"), ("filters", "16,16"), ("lr", "0"), ("gamma", "1.5")])
def test_bad_options_are_rejected_with_the_reason(option, value):
    with pytest.raises(ConfigError, match=option):
        resolve_config("vpn", "rlkit2/Collect-v0", {option: value})


def test_envs_vpn_cannot_plan_on_get_a_clear_error(tmp_path):
    for env, message in [("Pendulum-v1", "discrete set of options"), ("CartPole-v1", r"image-like observations")]:
        run, cfg = resolve_config("vpn", env, {"runs_dir": str(tmp_path), "total_steps": 100, "progress": False})
        with pytest.raises(ConfigError, match=message):
            train(run, cfg)


def test_vpn_runs_on_atari_with_primitive_actions_as_options(tmp_path):
    overrides = {"total_steps": 64, "num_envs": 2, "num_steps": 4, "random_buffer": 64, "branch": "2,1",
                 "filters": "8,8,8", "eval_every": 0, "eval_episodes": 1, "eval_envs": 1, "runs_dir": str(tmp_path),
                 "progress": False, "tensorboard": False, "atari.max_episode_frames": 400}
    run, cfg = resolve_config("vpn", "ALE/Pong-v5", overrides)
    result = train(run, cfg)
    assert result.status == "finished" and result.env_steps == 64


def test_update_targets_bootstrap_from_the_target_network_and_stop_at_terminals(monkeypatch):
    """T = 3, two envs, gamma 0.5: env 0 runs through (bootstrap from the target network's planned value 5),
    env 1 terminates after option 1 (value 0 there) and starts a new episode, so its rollout is two pieces."""
    import envs
    from rlkit2.agent import BuildContext
    from agents.vpn import VPNAgent

    env = envs.make("rlkit2/Collect-v0", 2, seed=0)
    ctx = BuildContext(env=env, device=torch.device("cpu"), total_steps=100, seed=0, threads_collect=1, threads_update=1)
    agent = VPNAgent(VPNConfig(filters=(4, 4, 4), random_buffer=0, gamma=0.5, num_steps=3), ctx)
    monkeypatch.setattr(agent, "q_values", lambda net, obs: torch.full((len(obs), 4), 5.0 if net is agent.target
                                                                       else float("nan")))
    seen = []

    def spy(net, obs, options, rewards, durations, starts, next_returns, k, has_value=None, step_mask=None):
        seen.append((rewards[:, 0].tolist(), next_returns[:, 0].tolist(), step_mask[:, 0].tolist()))
        return model_losses(net, obs, options, rewards, durations, starts, next_returns, k, has_value, step_mask)

    monkeypatch.setattr(vpn_module, "model_losses", spy)
    obs = np.zeros((4, 2, 4, 10, 10), np.uint8)
    rewards = np.array([[1.0, 1.0], [2.0, 1.0], [3.0, 1.0]], np.float32)
    durations = np.array([[1.0, 1.0], [2.0, 1.0], [1.0, 1.0]], np.float32)
    terminated = np.array([[False, False], [False, True], [False, False]])
    agent.update(obs, np.zeros((3, 2), np.int64), rewards, durations, terminated, np.zeros((3, 2), bool), [])
    assert agent.updates == 3  # pieces: env 0 [0, 3); env 1 [0, 2) and [2, 3)
    # env 0: R2 = 3 + .5 * 5 = 5.5, R1 = 2 + .25 * 5.5 = 3.375; the value after option t is R_{t+1}
    assert seen[0] == ([1.0, 2.0, 3.0], [3.375, 5.5, 5.0], [True, True, True])
    # env 1, first episode: R1 = 1 + .5 * 0 (terminal); padded to 2 steps of the 2-step piece
    assert seen[1][1][:2] == [1.0, 0.0] and seen[1][2] == [True, True]
    assert seen[2][1][:1] == [5.0] and seen[2][2][:1] == [True]  # the new episode bootstraps from the target


def test_rollouts_are_cut_into_pieces_at_episode_ends():
    ended = np.array([[False, True], [True, False], [False, False], [False, True]])
    assert rollout_pieces(ended) == [(0, 0, 2), (0, 2, 4), (1, 0, 1), (1, 1, 4)]


def test_random_windows_stop_at_episode_ends_and_never_start_on_a_last_option():
    import envs

    env = envs.make("rlkit2/Collect-v0", 4, seed=0, env_kwargs={"size": 6, "num_goals": 2, "max_steps": 8})
    windows = RandomWindows(env, 2000, gamma=0.9, seed=0)
    obs, options, rewards, durations, mask = windows.sample(300, 10, np.random.default_rng(0))
    assert obs.shape[1] == 300 and mask[0].all() and mask.shape == options.shape
    assert (np.diff(mask.astype(int), axis=0) <= 0).all()  # a window is a prefix: once masked, masked for good
    assert (durations[mask] >= 1).all() and mask.sum(0).min() >= 1 and (mask.sum(0) < 10).any()


def test_option_outcome_discounts_inside_the_option_and_defaults_to_primitive_steps():
    info = {"final_info": {"option_rewards": np.array([[1.0, 2.0, 4.0, 0.0]], np.float32),
                           "option_steps": np.array([3])}}
    reward, duration = option_outcome(np.array([7.0]), info, gamma=0.5)
    assert reward.tolist() == [1.0 + 0.5 * 2.0 + 0.25 * 4.0] and duration.tolist() == [3.0]
    reward, duration = option_outcome(np.array([7.0, -1.0]), {"final_info": {}}, gamma=0.5)  # e.g. Atari
    assert reward.tolist() == [7.0, -1.0] and duration.tolist() == [1.0, 1.0]


@pytest.mark.parametrize("size,stride,expected", [(10, 2, 5), (7, 2, 4), (84, 4, 21), (9, 1, 9)])
def test_same_padding_gives_ceil_of_size_over_stride(size, stride, expected):
    conv = SameConv2d(1, 1, 4 if stride > 1 else 3, stride)
    assert conv(torch.zeros(1, 1, size, size + 1)).shape[-2:] == (expected, -(-(size + 1) // stride))


@pytest.mark.parametrize("branch, k", [("4", 1), ("4,4", 2), ("4,4,4", 3), ("4,4,4,1,1", 5)])
def test_unroll_length_defaults_to_the_plan_depth(branch, k):
    """The official runs pair --prediction-step with the branch list (k = d); an explicit k still wins."""
    from rlkit2.run import resolve_config

    _, cfg = resolve_config("vpn", "rlkit2/Collect-v0", {"branch": branch})
    assert cfg.unroll == k
    _, cfg = resolve_config("vpn", "rlkit2/Collect-v0", {"branch": branch, "prediction_steps": 2})
    assert cfg.unroll == 2
