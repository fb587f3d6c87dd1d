"""The Collect domain of Value Prediction Networks (Oh, Singh, Lee 2017), batched in numpy.

An agent in a random 10x10 maze collects goals within a time limit, moving with *options*: "go up / right /
down / left until a corridor end, a branch point or a goal". It follows the official code
(junhyukoh/value-prediction-network ``maze.py``, ``config/collect_*.xml``):

- maze: depth-first-search maze on the 8x8 interior (no two turns in a row), then ``holes`` extra openings
  (walls between two open cells in a line); the agent and ``num_goals`` goals on distinct random open cells;
- primitive step: move one cell (-0.2), bump into a wall (-0.5, no move), reach a goal (+2.0 instead);
  the episode ends when every goal is collected or after ``max_steps`` primitive steps;
- option (the env's action): repeat the primitive move until the next move would hit a wall, a goal was
  reached, the agent stands on a branch point (more than 2 open neighbours) or the episode ended;
- stochastic variant (``CollectStochastic``): at a branch point the option fails to stop with probability
  ``p_slip``; after every primitive step each goal moves to a random empty neighbour with probability
  ``p_goal``.

What the env returns:
- observation ``uint8 [4, H, W]``: wall, agent and goal planes (0/1) and a plane filled with the remaining
  primitive steps (the official "remaining time" meta input). ``observation_space.high`` holds each plane's
  maximum, so ``obs / high`` is the official [0, 1] input;
- reward: the *undiscounted* sum of the option's primitive rewards, so an episode's return is the paper's
  "average reward" metric;
- ``terminated`` at the end of an episode, time limit included: the remaining time is part of the
  observation, so the state is Markov and the end is a true terminal (as in the official code);
- ``info["option_steps"]`` (the option's duration in primitive steps) and ``info["option_rewards"]``
  (its primitive rewards, zero-padded to ``max_steps``), from which an SMDP agent forms
  ``sum_i gamma^i r_i`` and ``gamma^duration`` with its own gamma. (The official env discounts inside the option
  with a fixed 0.99 while its agent uses 0.98; returning the raw rewards avoids that mismatch.)

``CollectBatch`` steps N mazes at once (array ops over the envs; only maze generation at reset is a
per-env Python loop); ``CollectEnv`` is the single gymnasium env (a batch of one) registered as
``rlkit2/Collect-v0`` and ``rlkit2/CollectStochastic-v0``; ``CollectBackend`` serves ``envs.make`` with
the batch directly (backend ``batched``). Env ``i`` draws its randomness from its own generator seeded
``seed + i``, so the batched backend and a sync vector of ``CollectEnv`` produce identical episodes.
It is also the project's worked example of a custom env.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import gymnasium as gym
import numpy as np

WALL, AGENT, GOAL, TIME = 0, 1, 2, 3
DY = np.array([-1, 0, 1, 0])  # options 0..3: up, right, down, left (the official order)
DX = np.array([0, 1, 0, -1])
COLLECT_IDS = ("rlkit2/Collect-v0", "rlkit2/CollectStochastic-v0")


@dataclass(frozen=True)
class CollectConfig:
    size: int = 10  # maze side including the outer wall
    max_steps: int = 20  # primitive steps per episode
    holes: int = 5  # extra openings after the DFS maze
    num_goals: int = 8
    reward_goal: float = 2.0
    reward_step: float = -0.2
    reward_blocked: float = -0.5
    p_slip: float = 0.0  # an option fails to stop at a branch point
    p_goal: float = 0.0  # each goal moves to a random empty neighbour after each primitive step

    def validate(self) -> None:
        if self.size < 4:
            raise ValueError(f"Collect: size must be >= 4, got {self.size}")
        if self.max_steps < 1 or self.num_goals < 1 or self.holes < 0:
            raise ValueError(f"Collect: max_steps and num_goals must be >= 1 and holes >= 0 ({self})")
        if self.max_steps > 255:
            raise ValueError(f"Collect: max_steps must be <= 255 (it is stored in a uint8 plane), got {self.max_steps}")
        if not (0.0 <= self.p_slip <= 1.0 and 0.0 <= self.p_goal <= 1.0):
            raise ValueError(f"Collect: p_slip and p_goal must be probabilities ({self})")


STOCHASTIC = {"p_slip": 0.3, "p_goal": 0.3}


def generate_maze(size: int, holes: int, rng: np.random.Generator) -> np.ndarray:
    """bool [size, size], True = wall: a DFS maze inside a border wall, then ``holes`` extra openings."""
    m = size - 2
    maze = np.ones((m, m), bool)
    y, x = int(rng.integers(m)), int(rng.integers(m))
    maze[y, x] = False
    stack = [(y, x, 0)]
    while stack:
        cy, cx, cd = stack[-1]
        # no zigzags: after a change of direction the next step must keep it
        directions = [cd] if len(stack) > 2 and cd != stack[-2][2] else range(4)
        candidates = []
        for d in directions:
            ny, nx = cy + DY[d], cx + DX[d]
            if 0 <= ny < m and 0 <= nx < m and maze[ny, nx]:
                open_neighbours = sum(1 for j in range(4) if 0 <= ny + DY[j] < m and 0 <= nx + DX[j] < m
                                      and not maze[ny + DY[j], nx + DX[j]])
                if open_neighbours == 1:
                    candidates.append(d)
        if candidates:
            d = candidates[int(rng.integers(len(candidates)))]
            cy, cx = cy + DY[d], cx + DX[d]
            maze[cy, cx] = False
            stack.append((cy, cx, d))
        else:
            stack.pop()
    walls = np.ones((size, size), bool)
    walls[1:-1, 1:-1] = maze
    for _ in range(holes):
        inner = walls[1:-1, 1:-1]
        up, down, left, right = walls[:-2, 1:-1], walls[2:, 1:-1], walls[1:-1, :-2], walls[1:-1, 2:]
        removable = inner & ((up & down & ~left & ~right) | (~up & ~down & left & right))
        ys, xs = np.nonzero(removable)
        if len(ys) == 0:
            break
        i = int(rng.integers(len(ys)))
        walls[ys[i] + 1, xs[i] + 1] = False
    return walls


class CollectBatch:
    """N Collect mazes stepped together. Arrays: walls/goals ``[N,H,W]`` bool, agent ``[N,2]`` (y, x),
    goal positions ``[N,G,2]`` with ``goal_alive [N,G]``, primitive time ``t [N]``."""

    def __init__(self, num_envs: int, config: CollectConfig = CollectConfig()):
        config.validate()
        self.n, self.cfg = num_envs, config
        s, g = config.size, config.num_goals
        self.walls = np.ones((num_envs, s, s), bool)
        self.goals = np.zeros((num_envs, s, s), bool)
        self.agent = np.zeros((num_envs, 2), np.int64)
        self.goal_pos = np.zeros((num_envs, g, 2), np.int64)
        self.goal_alive = np.zeros((num_envs, g), bool)
        self.t = np.zeros(num_envs, np.int64)
        self.rngs = [np.random.default_rng(i) for i in range(num_envs)]
        high = np.ones((4, s, s), np.uint8)
        high[TIME] = config.max_steps
        self.observation_space = gym.spaces.Box(np.zeros_like(high), high, dtype=np.uint8)
        self.action_space = gym.spaces.Discrete(4)
        self.stochastic = config.p_slip > 0 or config.p_goal > 0

    def seed(self, seed: int) -> None:
        self.rngs = [np.random.default_rng(seed + i) for i in range(self.n)]

    def reset_envs(self, ids: np.ndarray) -> None:
        cfg = self.cfg
        for i in ids:
            rng = self.rngs[i]
            walls = generate_maze(cfg.size, cfg.holes, rng)
            open_cells = np.argwhere(~walls)
            if len(open_cells) < cfg.num_goals + 1:
                raise ValueError(f"Collect: a {cfg.size}x{cfg.size} maze has {len(open_cells)} open cells, too few "
                                 f"for the agent and {cfg.num_goals} goals; use fewer goals or a larger size")
            picks = rng.choice(len(open_cells), size=cfg.num_goals + 1, replace=False)
            self.walls[i] = walls
            self.agent[i] = open_cells[picks[0]]
            self.goal_pos[i] = open_cells[picks[1:]]
            self.goal_alive[i] = True
            self.goals[i] = False
            self.goals[i, self.goal_pos[i, :, 0], self.goal_pos[i, :, 1]] = True
            self.t[i] = 0

    def observe(self) -> np.ndarray:
        n, s = self.n, self.cfg.size
        obs = np.zeros((n, 4, s, s), np.uint8)
        obs[:, WALL] = self.walls
        obs[np.arange(n), AGENT, self.agent[:, 0], self.agent[:, 1]] = 1
        obs[:, GOAL] = self.goals
        obs[:, TIME] = (self.cfg.max_steps - self.t)[:, None, None]
        return obs

    def _open(self, ids: np.ndarray, y: np.ndarray, x: np.ndarray) -> np.ndarray:
        return ~self.walls[ids, y, x]

    def step(self, options: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """Run one option in every env. Returns ``(reward [N], terminated [N], option_steps [N],
        option_rewards [N, max_steps])``; the envs are *not* reset here."""
        cfg, n = self.cfg, self.n
        options = np.asarray(options, np.int64).reshape(n)
        if ((options < 0) | (options > 3)).any():
            raise ValueError(f"Collect: options must be in 0..3, got {options.tolist()}")
        rewards = np.zeros((n, cfg.max_steps), np.float32)
        steps = np.zeros(n, np.int64)
        terminated = np.zeros(n, bool)
        active = np.ones(n, bool)
        dy, dx = DY[options], DX[options]
        while active.any():
            ids = np.flatnonzero(active)
            y, x = self.agent[ids, 0], self.agent[ids, 1]
            ny, nx = y + dy[ids], x + dx[ids]
            moved = self._open(ids, ny, nx)
            y, x = np.where(moved, ny, y), np.where(moved, nx, x)
            self.agent[ids, 0], self.agent[ids, 1] = y, x
            reward = np.where(moved, cfg.reward_step, cfg.reward_blocked).astype(np.float32)
            reached = self.goals[ids, y, x]
            reward[reached] = cfg.reward_goal
            self.goals[ids, y, x] = False
            self.goal_alive[ids] &= ~(reached[:, None] & (self.goal_pos[ids] == np.stack([y, x], 1)[:, None]).all(-1))
            self.t[ids] += 1
            rewards[ids, steps[ids]] = reward
            steps[ids] += 1
            done = ~self.goal_alive[ids].any(1) | (self.t[ids] >= cfg.max_steps)
            terminated[ids] = done
            noise = np.stack([self.rngs[i].random(1 + 2 * cfg.num_goals) for i in ids]) if self.stochastic else None
            if cfg.p_goal > 0 and (~done).any():
                self._move_goals(ids[~done], noise[~done, 1:])
            # the option stops before a wall, at a goal, or at a branch point (unless it slips past it)
            blocked_ahead = ~self._open(ids, y + dy[ids], x + dx[ids])
            branch = self._open_neighbours(ids, y, x) > 2
            if cfg.p_slip > 0:
                branch &= ~(noise[:, 0] < cfg.p_slip)
            active[ids] = ~(done | blocked_ahead | reached | branch)
        total = rewards.sum(1)
        return total, terminated, steps, rewards

    def _open_neighbours(self, ids: np.ndarray, y: np.ndarray, x: np.ndarray) -> np.ndarray:
        return sum(self._open(ids, y + DY[d], x + DX[d]).astype(np.int64) for d in range(4))

    def _move_goals(self, ids: np.ndarray, noise: np.ndarray) -> None:
        """Each live goal moves with probability p_goal to a uniformly chosen empty neighbour (goals in order,
        so two goals never land on one cell). ``noise [len(ids), 2G]``: (move?, which neighbour) uniforms."""
        g = self.cfg.num_goals
        for k in range(g):
            gy, gx = self.goal_pos[ids, k, 0], self.goal_pos[ids, k, 1]
            moving = self.goal_alive[ids, k] & (noise[:, 2 * k] < self.cfg.p_goal)
            empty = np.stack([self._open(ids, gy + DY[d], gx + DX[d]) & ~self.goals[ids, gy + DY[d], gx + DX[d]]
                              & ~((self.agent[ids, 0] == gy + DY[d]) & (self.agent[ids, 1] == gx + DX[d]))
                              for d in range(4)], 1)  # [K, 4]
            count = empty.sum(1)
            moving &= count > 0
            if not moving.any():
                continue
            # the j-th empty direction, j = floor(u * count)
            j = np.minimum((noise[:, 2 * k + 1] * count).astype(np.int64), np.maximum(count - 1, 0))
            d = np.argmax(np.cumsum(empty, 1) > j[:, None], 1)
            sel = np.flatnonzero(moving)
            env, oy, ox = ids[sel], gy[sel], gx[sel]
            ty, tx = oy + DY[d[sel]], ox + DX[d[sel]]
            self.goals[env, oy, ox] = False
            self.goals[env, ty, tx] = True
            self.goal_pos[env, k, 0], self.goal_pos[env, k, 1] = ty, tx

    def render_rgb(self, i: int = 0, cell: int = 24) -> np.ndarray:
        colours = {WALL: (44, 42, 60), AGENT: (91, 255, 123), GOAL: (52, 152, 219)}  # the official colours
        s = self.cfg.size
        image = np.full((s, s, 3), 255, np.uint8)
        image[self.walls[i]] = colours[WALL]
        image[self.goals[i]] = colours[GOAL]
        image[self.agent[i, 0], self.agent[i, 1]] = colours[AGENT]
        return np.repeat(np.repeat(image, cell, 0), cell, 1)

    def to_string(self, i: int = 0) -> str:
        chars = np.where(self.walls[i], "#", " ").astype(object)
        chars[self.goals[i]] = "x"
        chars[self.agent[i, 0], self.agent[i, 1]] = "o"
        return "\n".join("".join(row) for row in chars)


class CollectEnv(gym.Env):
    """One Collect maze as a gymnasium env (see the module docstring). Keyword arguments override
    ``CollectConfig``'s fields, e.g. ``gym.make("rlkit2/Collect-v0", num_goals=4)``."""

    metadata = {"render_modes": ["rgb_array", "ansi"], "render_fps": 4}

    def __init__(self, render_mode: str | None = None, **config: Any):
        self.config = CollectConfig(**config)
        self.batch = CollectBatch(1, self.config)
        self.observation_space = self.batch.observation_space
        self.action_space = self.batch.action_space
        self.render_mode = render_mode

    def reset(self, *, seed: int | None = None, options: dict | None = None):
        super().reset(seed=seed)
        if seed is not None:
            self.batch.seed(seed)
        self.batch.reset_envs(np.array([0]))
        return self.batch.observe()[0], _empty_option_info(self.config)

    def step(self, action):
        reward, terminated, steps, rewards = self.batch.step(np.array([int(action)]))
        info = {"option_steps": int(steps[0]), "option_rewards": rewards[0].copy()}
        return self.batch.observe()[0], float(reward[0]), bool(terminated[0]), False, info

    def render(self):
        if self.render_mode == "ansi":
            return self.batch.to_string(0)
        if self.render_mode == "rgb_array":
            return self.batch.render_rgb(0)
        return None


def _empty_option_info(config: CollectConfig) -> dict[str, Any]:
    return {"option_steps": 0, "option_rewards": np.zeros(config.max_steps, np.float32)}


class CollectBackend:
    """``envs.make`` backend ``batched`` for the Collect ids: SAME_STEP autoreset on a ``CollectBatch``.
    ``extra_info`` describes the returned observations (an env that just reset reports an empty option);
    ``final_info`` holds every env's step info (the ended option of a finished episode included)."""

    def __init__(self, num_envs: int, config: CollectConfig):
        self.batch = CollectBatch(num_envs, config)
        self.num_envs = num_envs
        self.single_observation_space = self.batch.observation_space
        self.single_action_space = self.batch.action_space
        empty = _empty_option_info(config)
        self.extra_info = {k: np.stack([v] * num_envs) for k, v in empty.items()}
        self.final_info = dict(self.extra_info)

    def reset(self, seed: int | None) -> tuple[np.ndarray, None]:
        if seed is not None:
            self.batch.seed(seed)
        self.batch.reset_envs(np.arange(self.num_envs))
        return self.batch.observe(), None

    def step(self, actions: np.ndarray):
        reward, terminated, steps, rewards = self.batch.step(actions)
        final_obs = self.batch.observe()
        obs = final_obs
        self.final_info = {"option_steps": steps, "option_rewards": rewards}
        self.extra_info = dict(self.final_info)
        if terminated.any():
            ended = np.flatnonzero(terminated)
            self.batch.reset_envs(ended)
            obs = self.batch.observe()
            self.extra_info = {"option_steps": np.where(terminated, 0, steps),
                               "option_rewards": np.where(terminated[:, None], 0.0, rewards).astype(np.float32)}
        return obs, reward, terminated, np.zeros(self.num_envs, bool), final_obs, None

    def render(self) -> np.ndarray:
        return self.batch.render_rgb(0)

    def close(self) -> None:
        pass


def is_collect(env: Any) -> bool:
    return isinstance(env, str) and env in COLLECT_IDS


def collect_config(env_id: str, **overrides: Any) -> CollectConfig:
    base = STOCHASTIC if env_id == "rlkit2/CollectStochastic-v0" else {}
    return CollectConfig(**{**base, **overrides})


def register() -> None:
    if COLLECT_IDS[0] not in gym.registry:
        gym.register(id=COLLECT_IDS[0], entry_point="envs.collect:CollectEnv")
        gym.register(id=COLLECT_IDS[1], entry_point="envs.collect:CollectEnv", kwargs=STOCHASTIC)
