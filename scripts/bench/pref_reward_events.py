#!/usr/bin/env python
"""Where a finished preference run's reward model puts its reward around the steps that earn true reward: plays
the run's final policy (sampled actions) for ``--steps`` env steps and averages the learned reward r_hat at each
offset from every step whose true reward is positive or negative (an event-triggered average; on Pong, the steps
where a point is scored). r_hat is shown in units of the std it was normalised to in training (``reward_scale``):
the RL agent's reward, in the units the run meant it to have, so that a few off-range steps show as what they are.

A reward model that credits the right frames dips just before (o_t, a_t) of a lost point (offset 0 is the step
that earns it); one that ranks segments by something else (the score digits, the ball's absence after a point)
shows its dip after offset 0, or none. The record also has the std of r_hat over the played steps with and without
its 0.1% largest |r_hat|, the largest |r_hat| and the steps since an episode start where it occurs, and the share of
steps at the ``reward_clip`` bound (all in those units); and, for a model with an action input and discrete actions,
the mean reward of each action on the played observations (minus the mean over actions) next to how often the
policy took it: a policy that farms a per-action bias takes the action the model pays most for.

``--zero-padding`` scores the raw zero-padded stacks of an Atari episode's first steps, as the reward model did
before it filled them (commit 7ef815e): this is how the failed Pong run's reward looked to PPO.

    python scripts/bench/pref_reward_events.py RUN_DIR [--steps 8000] [--window 20] --out docs/bench/X.jsonl
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from benchlib import STARTED_ON  # noqa: E402

from rlkit2 import checkpoint as ckpt  # noqa: E402
from rlkit2.agent import get_agent_spec  # noqa: E402
from rlkit2.device import set_threads  # noqa: E402
from rlkit2.preference import has_batch_norm  # noqa: E402
from rlkit2.run import build_agent, load_run_config, make_env  # noqa: E402


def finished_pref_run(run_dir: Path, overrides: dict | None = None):
    """(run config, pref config, path of final.pt) of a finished preference run; a clear exit otherwise."""
    try:
        run, cfg = load_run_config(run_dir, overrides)
    except FileNotFoundError as e:
        raise SystemExit(str(e)) from None
    if run.agent != "pref":
        raise SystemExit(f"{run_dir} is a run of agent '{run.agent}', not of --agent pref")
    final = Path(run_dir) / "checkpoints" / "final.pt"
    if not final.is_file():
        raise SystemExit(f"{run_dir} has no checkpoints/final.pt: the run has not finished (resume it with "
                         f"python scripts/train.py --resume {run_dir})")
    return run, cfg, final


def event_average(learned: np.ndarray, true: np.ndarray, window: int) -> dict[str, dict]:
    """learned, true: [T, N] per-step rewards of N envs. For each sign of the true reward, the mean learned reward
    minus its median over all steps, at offsets -window..window from the steps with that sign (events whose window
    leaves the array are skipped): {"negative"/"positive": {"events": n, "mean": [2 * window + 1]}}."""
    z = learned - np.median(learned)
    offsets = np.arange(-window, window + 1)
    out = {}
    for name, sign in (("negative", -1), ("positive", 1)):
        t, env = np.nonzero(np.sign(true) == sign)
        inside = (t - window >= 0) & (t + window < len(true))
        t, env = t[inside], env[inside]
        rows = z[t[:, None] + offsets, env[:, None]]  # [events, 2 * window + 1]
        out[name] = {"events": int(len(t)), "mean": rows.mean(0).round(4).tolist() if len(t) else []}
    return out


def play(run_dir: Path, steps: int, num_envs: int, seed: int,
         zero_padding: bool = False) -> tuple[np.ndarray, np.ndarray, np.ndarray, float, dict | None]:
    """[T, N] learned rewards (in units of the run's reward_scale), true rewards and steps since the episode
    started, of the run's final policy (sampled actions) on its own env settings; the run's reward_clip; and, with
    an action input and discrete actions, each action's mean reward (minus the mean over actions) and share."""
    run, agent_config, final = finished_pref_run(run_dir, {"device": "cpu"})
    state = ckpt.load(final, map_location="cpu")["agent_state"]
    if not has_batch_norm(state["reward_model"]):  # the model as saved: runs before the paper's batch norm had none
        agent_config = dataclasses.replace(agent_config, reward_batch_norm=False, reward_dropout=0.0)
    env = make_env(run, num_envs, seed)
    agent = build_agent(get_agent_spec("pref"), run, agent_config, env, training=False)
    agent.load_state_dict(state)
    agent.model.eval()
    if zero_padding:
        agent.model.frame_stack = False
    wrapped = agent.env  # steps the env and scores each (o_t, a_t) with the reward model
    obs, _ = wrapped.reset(seed=seed)
    learned, true, age = [], [], []
    since_start = np.zeros(num_envs, np.int64)
    n = env.single_action_space.n if agent.env.discrete and agent.model.use_actions else 0
    per_action, taken = np.zeros(n), np.zeros(n)
    with torch.no_grad():
        for _ in range(steps // num_envs):
            actions = agent.act(torch.as_tensor(obs), deterministic=False).numpy()
            if n:  # r_hat of every action on these observations
                o = torch.as_tensor(obs).repeat_interleave(n, 0)
                every = torch.as_tensor(wrapped.model_input(np.tile(np.arange(n), len(obs))))
                per_action += agent.model.reward(o, every).view(len(obs), n).sum(0).numpy()
                taken += np.bincount(actions, minlength=n)
            obs, reward, terminated, truncated, info = wrapped.step(actions)
            learned.append(reward)
            true.append(info["true_reward"])
            age.append(since_start.copy())
            since_start = np.where(terminated | truncated, 0, since_start + 1)
    env.close()
    actions = None
    if n:
        mean = per_action / taken.sum() / agent_config.reward_scale
        actions = {"reward_minus_mean": (mean - mean.mean()).round(4).tolist(),
                   "policy_share": (taken / taken.sum()).round(4).tolist()}
    return (np.array(learned) / agent_config.reward_scale, np.array(true, np.float32), np.array(age),
            agent_config.reward_clip, actions)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("run_dir", type=Path)
    parser.add_argument("--steps", type=int, default=8000, help="env steps in all (all envs together)")
    parser.add_argument("--envs", type=int, default=8)
    parser.add_argument("--window", type=int, default=20, help="offsets shown on each side of an event")
    parser.add_argument("--seed", type=int, default=12345)
    parser.add_argument("--zero-padding", action="store_true",
                        help="score Atari reset stacks with their zero padding (the reward model before 7ef815e)")
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    set_threads(1)
    learned, true, age, clip, actions = play(args.run_dir, args.steps, args.envs, args.seed, args.zero_padding)
    flat_l, flat_t = learned.ravel(), true.ravel()
    size = np.abs(flat_l)
    bulk = flat_l[size <= np.quantile(size, 0.999)]
    record = {"run": args.run_dir.name, "zero_padding": args.zero_padding, "steps": int(flat_l.size),
              "window": args.window, "std": float(flat_l.std()), "std_without_top_0.1%": float(bulk.std()),
              "max_abs": float(size.max()), "max_abs_episode_step": int(age.ravel()[size.argmax()]),
              "share_at_clip": float((size >= clip - 1e-4).mean()) if clip > 0 else None,
              "step_correlation": float(np.corrcoef(flat_l, flat_t)[0, 1]) if flat_t.std() > 0 else None,
              "actions": actions, **event_average(learned, true, args.window), "commit": STARTED_ON}
    for name in ("negative", "positive"):
        e = record[name]
        if e["events"]:
            mean = np.array(e["mean"])
            print(f"{name}: {e['events']} events; r_hat - median at offsets -{args.window}..{args.window}:")
            print("  " + " ".join(f"{o:+d}:{m:+.2f}" for o, m in zip(range(-args.window, args.window + 1), mean)))
    print(json.dumps({k: v for k, v in record.items() if k not in ("negative", "positive")}))
    if args.out:
        with args.out.open("a") as f:
            f.write(json.dumps(record) + "\n")


if __name__ == "__main__":
    main()
