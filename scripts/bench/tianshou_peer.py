"""Tianshou 2 as a second speed peer: its PPO at throughput.py's settings and its SAC at dsac_speed.py's, built and
run the way Tianshou's own MuJoCo examples do (a Collector on a vector env, the algorithm's own trainer), and timed
like the SB3 peers: PPO's rate after the first iteration, SAC's over the steps after the random warm-up.

Optional: ``available()`` says whether tianshou can be imported (``pip install -e .[bench]`` installs it); the
scripts skip this peer without it.

What Tianshou does not let us make identical (every other setting is the same; see the scripts' docstrings):

- PPO computes the rollout's values, V(s') and the old log-probabilities in extra batched forwards after
  collection (batches of ``max_batchsize`` 2048, so one each), where rlkit2 and SB3 keep those of collection;
  its GAE then bootstraps every step from V(s') (a second critic forward over the rollout).
- PPO's minibatches: per epoch ``Batch.split`` shuffles and slices its own Batch structure (a Python tree of
  tensors) and calls ``.item()`` on four losses per minibatch for its statistics (host syncs, no effect on CPU
  beyond the call); the optimizer step goes through its optimizer wrapper (zero_grad, backward, clip_grad_norm_
  over all parameters, step), as SB3's does.
- Advantage normalisation, value loss and clipping match: per-minibatch ``(A - mean) / (std + 1e-8)``, squared
  error without value clipping, ``clip_grad_norm_`` 0.5, no dual clip, no return scaling, no lr schedule.
- Steps: it collects ``ceil(2048 / 8) * 8`` = 2048 transitions per iteration, resets finished envs itself (no
  autoreset; HalfCheetah only truncates, at 1000 steps), clips actions to [-1, 1] before the env (as SB3) and
  stores the unclipped ones; its trainer scans the whole buffer for NaNs after every collection.
- Vector env: ``DummyVectorEnv`` (the envs stepped in turn in the process), the counterpart of rlkit2's
  ``sync`` backend and SB3's DummyVecEnv. Tianshou's envpool support is pinned to envpool < 0.9 (its envpool
  extra) and ours is 1.x, so it has no envpool row.
- Untimed, as every peer's set-up: the numba compile of its GAE, n-step and buffer kernels (several seconds, at
  construction).
- SAC: two critics with two Adam optimizers (SB3: one optimizer over both), the actor and alpha updated every
  step (DSAC-T every second step); one ``collect(n_step=1)`` call per env step through its Collector.
- Threads: ``torch.set_num_threads(threads)`` for inference and update alike, as for SB3 (rlkit2's
  ``threads_update`` applies to the update only).
"""

from __future__ import annotations

import importlib.util
import time

import torch


def available() -> bool:
    """Whether tianshou can be imported (it is an optional peer)."""
    return importlib.util.find_spec("tianshou") is not None


def _orthogonal_init(hidden: list[torch.nn.Module], outputs: list[tuple[torch.nn.Module, float]]) -> None:
    """SB3's (and rlkit2's) initialisation: orthogonal weights, gain sqrt 2 in the hidden layers and the given
    gain in each output layer, zero biases (Tianshou's nets keep PyTorch's default init otherwise)."""
    for module, gain in [(m, 2 ** 0.5) for m in hidden] + outputs:
        for layer in module.modules():
            if isinstance(layer, torch.nn.Linear):
                torch.nn.init.orthogonal_(layer.weight, gain=gain)
                torch.nn.init.zeros_(layer.bias)


def build_ppo(observation_space, action_space, settings: dict, rollout_size: int):
    """Tianshou's PPO at throughput.py's ``COMMON`` settings: separate 64x64 tanh nets initialised as SB3's, std 1
    at init (a state-independent log std starting at 0), Adam (eps 1e-5 as SB3, no lr decay), advantages
    normalised per minibatch and not recomputed, no value clipping, no return scaling."""
    from tianshou.algorithm import PPO
    from tianshou.algorithm.modelfree.reinforce import ProbabilisticActorPolicy
    from tianshou.algorithm.optim import AdamOptimizerFactory
    from tianshou.utils.net.common import Net
    from tianshou.utils.net.continuous import ContinuousActorProbabilistic, ContinuousCritic

    obs_shape = observation_space.shape
    actor = ContinuousActorProbabilistic(
        preprocess_net=Net(state_shape=obs_shape, hidden_sizes=[64, 64], activation=torch.nn.Tanh),
        action_shape=action_space.shape, unbounded=True)
    critic = ContinuousCritic(
        preprocess_net=Net(state_shape=obs_shape, hidden_sizes=[64, 64], activation=torch.nn.Tanh))
    _orthogonal_init([actor.preprocess, critic.preprocess], [(actor.mu, 0.01), (critic.last, 1.0)])
    # The sampled action, clipped to [-1, 1] on its way to the env only (HalfCheetah's bounds; SB3 does the same).
    policy = ProbabilisticActorPolicy(
        actor=actor, action_space=action_space, action_scaling=False, action_bound_method="clip",
        dist_fn=lambda loc_scale: torch.distributions.Independent(torch.distributions.Normal(*loc_scale), 1))
    return PPO(policy=policy, critic=critic, optim=AdamOptimizerFactory(lr=settings["lr"], eps=1e-5),
               eps_clip=settings["clip_eps"], value_clip=False, advantage_normalization=True,
               recompute_advantage=False, vf_coef=settings["value_coef"], ent_coef=settings["entropy_coef"],
               max_grad_norm=settings["max_grad_norm"], gae_lambda=settings["gae_lambda"], gamma=settings["gamma"],
               return_scaling=False, max_batchsize=rollout_size)  # the rollout's values in one forward


def ppo_rate(total_steps: int, threads: int, num_envs: int, settings: dict, env_id: str = "HalfCheetah-v5") -> dict:
    """Tianshou PPO (``build_ppo``) trained by its on-policy trainer on ``env_id`` x ``num_envs`` (a
    DummyVectorEnv) for ``total_steps``; rates after the first iteration, as for SB3. ``steps`` is the number
    of env steps timed."""
    import gymnasium as gym
    from tianshou.data import Collector, VectorReplayBuffer
    from tianshou.env import DummyVectorEnv
    from tianshou.trainer import OnPolicyTrainerParams

    per_iteration = settings["num_steps"] * num_envs
    if total_steps <= per_iteration:
        raise ValueError(f"total_steps={total_steps} must exceed one iteration ({per_iteration} steps): "
                         "the first iteration is not timed")
    torch.set_num_threads(threads)
    torch.manual_seed(0)
    envs = DummyVectorEnv([lambda: gym.make(env_id) for _ in range(num_envs)])
    envs.seed(0)
    algorithm = build_ppo(envs.observation_space[0], envs.action_space[0], settings, per_iteration)
    collector = Collector(algorithm, envs, VectorReplayBuffer(per_iteration, num_envs))

    starts: list[tuple[float, int]] = []  # (time, env steps) at the start of every iteration
    collect_seconds: list[float] = []
    collect = collector.collect

    def timed_collect(*args, **kwargs):
        start = time.perf_counter()
        stats = collect(*args, **kwargs)
        collect_seconds.append(time.perf_counter() - start)
        return stats

    collector.collect = timed_collect
    params = OnPolicyTrainerParams(
        training_collector=collector, max_epochs=1, epoch_num_steps=total_steps,
        collection_step_num_env_steps=per_iteration, batch_size=settings["minibatch_size"],
        update_step_num_repetitions=settings["epochs"], test_collector=None, logger=None, verbose=False,
        show_progress=False, training_fn=lambda epoch, env_step: starts.append((time.perf_counter(), env_step)))
    info = algorithm.run_training(params)
    end = time.perf_counter()
    envs.close()
    seconds = end - starts[1][0]
    steps = info.train_step - starts[1][1]
    collected = sum(collect_seconds[1:])
    return {"steps_per_sec": steps / seconds, "collect_steps_per_sec": steps / collected,
            "share_collect": collected / seconds, "first_iteration_seconds": starts[1][0] - starts[0][0],
            "steps": steps}


def sac_rate(env_id: str, steps: int, threads: int, warmup: int, hidden: tuple[int, ...] = (256, 256, 256)) -> dict:
    """Tianshou SAC at dsac_speed.py's sizes: one env, 3x256 GELU actor and two critics, batch 256, replay 1e6,
    Adam 3e-4, tau 0.005, gamma 0.99, alpha tuned from 1 towards -dim(A); ``warmup`` random steps first (untimed),
    then ``steps`` env steps with one update each through its off-policy trainer."""
    import gymnasium as gym
    from tianshou.algorithm import SAC
    from tianshou.algorithm.modelfree.sac import AutoAlpha, SACPolicy
    from tianshou.algorithm.optim import AdamOptimizerFactory
    from tianshou.data import Collector, ReplayBuffer
    from tianshou.env import DummyVectorEnv
    from tianshou.trainer import OffPolicyTrainerParams
    from tianshou.utils.net.common import Net
    from tianshou.utils.net.continuous import ContinuousActorProbabilistic, ContinuousCritic

    torch.set_num_threads(threads)
    torch.manual_seed(0)
    envs = DummyVectorEnv([lambda: gym.make(env_id)])
    envs.seed(0)
    obs_shape, action_space = envs.observation_space[0].shape, envs.action_space[0]
    actor = ContinuousActorProbabilistic(
        preprocess_net=Net(state_shape=obs_shape, hidden_sizes=hidden, activation=torch.nn.GELU),
        action_shape=action_space.shape, unbounded=True, conditioned_sigma=True)

    def critic() -> ContinuousCritic:
        return ContinuousCritic(preprocess_net=Net(state_shape=obs_shape, action_shape=action_space.shape,
                                                   hidden_sizes=hidden, activation=torch.nn.GELU, concat=True))

    adam = AdamOptimizerFactory(lr=3e-4)
    algorithm = SAC(policy=SACPolicy(actor=actor, action_space=action_space), policy_optim=adam,
                    critic=critic(), critic_optim=adam, critic2=critic(), critic2_optim=adam, tau=0.005, gamma=0.99,
                    alpha=AutoAlpha(target_entropy=-float(action_space.shape[0]), log_alpha=0.0, optim=adam))
    collector = Collector(algorithm, envs, ReplayBuffer(1_000_000))
    collector.reset()
    collector.collect(n_step=warmup, random=True)
    updates = [0]
    update = algorithm.update

    def counted_update(*args, **kwargs):
        updates[0] += 1
        return update(*args, **kwargs)

    algorithm.update = counted_update
    params = OffPolicyTrainerParams(
        training_collector=collector, max_epochs=1, epoch_num_steps=steps, collection_step_num_env_steps=1,
        update_step_num_gradient_steps_per_sample=1.0, batch_size=256, test_collector=None, logger=None,
        verbose=False, show_progress=False)
    start = time.perf_counter()
    info = algorithm.run_training(params)
    seconds = time.perf_counter() - start
    envs.close()
    return {"steps_per_sec": info.train_step / seconds, "updates_per_sec": updates[0] / seconds}
