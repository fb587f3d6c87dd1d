"""One vector-env interface over several backends, with one autoreset semantic.

The semantic every backend is normalized to (gymnasium's ``SAME_STEP``):

- ``step(actions)`` returns ``obs, reward, terminated, truncated, info`` of shape ``[N, ...]``.
- An env whose episode ended on this step (``terminated | truncated``) has already been reset: its row of
  ``obs`` is the first observation of the next episode.
- ``info["final_obs"]`` is a dense ``[N, ...]`` array holding the true last observation of every ended
  episode (and a copy of ``obs`` elsewhere); ``info["_final_obs"]`` is the ``[N]`` mask of ended envs. Bootstrap
  a truncated episode from ``final_obs``; never from ``obs``.
- The envs' own info keys pass through: ``info[k]`` describes the returned ``obs`` (an env that just reset
  reports its reset info); ``info["final_info"][k]`` is dense like ``final_obs``: the info of the step just
  taken for every env (for an ended episode, the info of its last step). Use the first for per-observation
  values (MiniGrid's ``agent_pos``), the second for per-transition values (Collect's ``option_steps``).
- ``terminated`` and ``truncated`` are never merged: a time limit is truncation.
- ``info["episode_return"]``, ``info["episode_length"]`` and the mask ``info["_episode"]`` report finished
  episodes, measured on the raw reward (before clipping) and per game, not per life.
- With ``episodic_life`` (Atari), a lost life sets ``terminated`` for learning but does not reset the game;
  ``info["life_lost"]`` marks such steps.
- A NaN/inf observation or reward raises ``EnvCheckError`` at the step it appears, naming the envs; an exception
  inside an env's ``step``/``reset`` becomes ``EnvStepError`` naming the env index (gymnasium backends, where
  ``ReportErrors`` wraps each env) and carrying the env's own traceback text.

Shape legend: ``N`` envs; ``...`` observation dims.
"""

from __future__ import annotations

import functools
import traceback
import warnings
from typing import Any, Protocol

import gymnasium as gym
import numpy as np

from envs.custom import EnvCheckError


class EnvStepError(EnvCheckError):
    """An env raised inside ``step()``/``reset()`` (a bug in a user's env, usually). The message names the env, the
    env steps taken so far, the env index when known and the env's exception; ``env_traceback`` is the env's own
    traceback text, for a log file rather than the console."""

    def __init__(self, message: str, env_traceback: str = ""):
        super().__init__(message)
        self.env_traceback = env_traceback


class EnvRaised(Exception):
    """An env's exception on its way out of a vector env, as plain data: ``(index, where, type name, message,
    traceback text)``. Plain data survives gymnasium's async workers, which send the exception back without its
    traceback and re-raise it as ``type(exception)(exception)`` (handled by the one-argument form)."""

    def __init__(self, *args: Any):
        if len(args) == 1 and isinstance(args[0], EnvRaised):
            args = args[0].args
        super().__init__(*args)

    @property
    def index(self) -> int:
        return self.args[0]

    def describe(self) -> tuple[str, str, str]:
        """(where, 'TypeName: message', traceback text)."""
        _, where, type_name, message, trace = self.args
        return where, f"{type_name}: {message}" if message else type_name, trace


class ReportErrors(gym.Wrapper):
    """Around env ``index`` of a gymnasium vector env: an exception in ``step``/``reset`` leaves as ``EnvRaised``,
    which says which env failed (a vector env does not) and keeps the env's traceback text."""

    def __init__(self, env: gym.Env, index: int):
        super().__init__(env)
        self.index = index

    def step(self, action: Any) -> Any:
        try:
            return self.env.step(action)
        except Exception as e:
            raise EnvRaised(self.index, "step()", type(e).__name__, str(e), traceback.format_exc()) from e

    def reset(self, **kwargs: Any) -> Any:
        try:
            return self.env.reset(**kwargs)
        except Exception as e:
            raise EnvRaised(self.index, "reset()", type(e).__name__, str(e), traceback.format_exc()) from e


class Backend(Protocol):
    """What ``VecEnv`` needs from a backend: SAME_STEP reset/step with a dense final observation."""

    num_envs: int
    single_observation_space: gym.Space
    single_action_space: gym.Space

    def reset(self, seed: int | None) -> tuple[np.ndarray, np.ndarray | None]:
        """Return ``(obs [N,...], lives [N] or None)``."""

    def step(self, actions: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray | None]:
        """Return ``(obs, reward, terminated, truncated, final_obs, lives)``, SAME_STEP, all ``[N, ...]``."""

    def close(self) -> None: ...

    # Optional: a backend with ``asynchronous = True`` also has ``send(actions)``, which starts a step and returns
    # while its own threads or processes step the envs, and ``recv()``, which waits and returns what ``step`` does.


class StepCount:
    """Env steps taken so far (a mutable count that several VecEnvs can share)."""

    def __init__(self, value: int = 0):
        self.value = value


class VecEnv(gym.vector.VectorEnv):
    """A gymnasium ``VectorEnv`` with rlkit2's autoreset semantic, episode statistics and Atari life handling."""

    def __init__(self, backend: Backend, *, name: str, backend_name: str, clip_rewards: bool = False,
                 episodic_life: bool = False, settings: dict[str, Any] | None = None, index_offset: int = 0,
                 steps: "StepCount | None" = None):
        self.backend = backend
        self.name = name
        self.backend_name = backend_name
        self.clip_rewards = clip_rewards
        self.episodic_life = episodic_life
        self.settings = dict(settings or {})  # everything that shaped this env, recorded with the run
        self.num_envs = backend.num_envs
        self.single_observation_space = backend.single_observation_space
        self.single_action_space = backend.single_action_space
        self.observation_space = gym.vector.utils.batch_space(self.single_observation_space, self.num_envs)
        self.action_space = gym.vector.utils.batch_space(self.single_action_space, self.num_envs)
        self.metadata = {"autoreset_mode": gym.vector.AutoresetMode.SAME_STEP}
        space = self.single_observation_space  # (np.issubdtype(None, floating) is True: check the type first)
        self._check_finite = isinstance(space, gym.spaces.Box) and np.issubdtype(space.dtype, np.floating)
        self._episode_return = np.zeros(self.num_envs, dtype=np.float64)
        self._episode_length = np.zeros(self.num_envs, dtype=np.int64)
        self._lives: np.ndarray | None = None
        self.index_offset = index_offset  # this VecEnv's env 0 is env ``index_offset`` of the run (error messages)
        # env steps taken (num_envs per step()), for error messages; the run loop sets it to a resumed run's count.
        # The halves of a PipelinedVecEnv share one count, so an error names the run's env step.
        self._steps = steps if steps is not None else StepCount()

    def reset(self, *, seed: int | None = None, options: dict | None = None) -> tuple[np.ndarray, dict]:
        if seed is not None:
            self.action_space.seed(seed)
        try:
            obs, self._lives = self.backend.reset(seed)
        except Exception as e:
            raise self._step_error(e, "reset()") from e
        self._episode_return[:] = 0.0
        self._episode_length[:] = 0
        self._raise_if_not_finite(obs, "reset()")
        return obs, dict(getattr(self.backend, "extra_info", {}))

    @property
    def env_steps(self) -> int:
        return self._steps.value

    @env_steps.setter
    def env_steps(self, value: int) -> None:
        self._steps.value = value

    @property
    def steps_natively_async(self) -> bool:
        """Whether ``step_async``/``step_wait`` hand the step to the backend's own threads (envpool, gymnasium's
        async workers) rather than running it inside ``step_wait``."""
        return getattr(self.backend, "asynchronous", False)

    def step(self, actions: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, dict]:
        try:
            result = self.backend.step(actions)
        except Exception as e:
            raise self._step_error(e, "step()") from e
        return self._finish_step(*result)

    def step_async(self, actions: np.ndarray) -> None:
        """Start a step and return: with a natively asynchronous backend the envs step while the caller works;
        otherwise the step runs in ``step_wait``."""
        if not self.steps_natively_async:
            self._pending_actions = actions
            return
        try:
            self.backend.send(actions)
        except Exception as e:
            raise self._step_error(e, "step()") from e

    def step_wait(self) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, dict]:
        """The result of the step started by ``step_async``, exactly as ``step`` returns it."""
        if not self.steps_natively_async:
            actions, self._pending_actions = self._pending_actions, None
            return self.step(actions)
        try:
            result = self.backend.recv()
        except Exception as e:
            raise self._step_error(e, "step()") from e
        return self._finish_step(*result)

    def _finish_step(self, obs: np.ndarray, reward: np.ndarray, terminated: np.ndarray, truncated: np.ndarray,
                     final_obs: np.ndarray, lives: np.ndarray | None):
        """The backend's SAME_STEP result -> checks, episode statistics, Atari lives, reward clipping, info."""
        reward = np.asarray(reward, dtype=np.float32)
        terminated = np.asarray(terminated, dtype=bool)
        truncated = np.asarray(truncated, dtype=bool) & ~terminated  # terminal wins when both are set
        ended = terminated | truncated
        if self._check_finite:
            self._raise_if_not_finite(obs, "step()")
            if ended.any():  # a NaN state often *is* why a MuJoCo episode terminated
                self._raise_if_not_finite(final_obs, "step() (as the final observation)")
        self._raise_if_reward_not_finite(reward)
        self.env_steps += self.num_envs

        self._episode_return += reward
        self._episode_length += 1
        info: dict[str, Any] = {
            **getattr(self.backend, "extra_info", {}),  # the envs' own info keys (e.g. MiniGrid's agent_pos)
            "final_info": getattr(self.backend, "final_info", {}),
            "final_obs": final_obs,
            "_final_obs": ended,
            "episode_return": np.where(ended, self._episode_return, 0.0),
            "episode_length": np.where(ended, self._episode_length, 0),
            "_episode": ended.copy(),
        }
        self._episode_return[ended] = 0.0
        self._episode_length[ended] = 0

        if lives is not None and self._lives is not None:
            life_lost = (lives < self._lives) & ~ended
            info["life_lost"] = life_lost
            if self.episodic_life:
                terminated = terminated | life_lost
        self._lives = lives
        if self.clip_rewards:
            reward = np.sign(reward)
        return obs, reward, terminated, truncated, info

    def _raise_if_not_finite(self, obs: np.ndarray, where: str) -> None:
        if self._check_finite and not np.isfinite(obs).all():
            bad = np.unique(np.argwhere(~np.isfinite(obs.reshape(self.num_envs, -1)))[:, 0]) + self.index_offset
            raise EnvCheckError(
                f"Env '{self.name}': {where} returned NaN or inf observations in env(s) {bad.tolist()}. "
                "Fix: find where the env produces non-finite values (unstable physics, division by zero). "
                f"{self._when()}"
            )

    def _raise_if_reward_not_finite(self, reward: np.ndarray) -> None:
        """A NaN reward would surface only later, as a non-finite loss far from its cause: name it here."""
        if not np.isfinite(reward).all():
            bad = np.flatnonzero(~np.isfinite(reward))
            raise EnvCheckError(
                f"Env '{self.name}': step() returned NaN or inf rewards in env(s) {(bad + self.index_offset).tolist()} "
                f"(values {reward[bad].tolist()}). Fix: find where the env computes the reward (division by zero, "
                f"log of 0, unstable physics) and make it finite. {self._when()}"
            )

    def _when(self) -> str:
        return f"It happened after {self.env_steps} env steps."

    def _step_error(self, error: Exception, where: str) -> EnvStepError:
        """The env's exception as one line: env id, env steps so far, env index (when a ReportErrors wrapper
        knows it), and the exception's own type and message; its traceback rides along for a log file."""
        if isinstance(error, EnvRaised):
            where, what, trace = error.describe()
            index = f" (env index {error.index})"
        else:
            what = f"{type(error).__name__}: {error}" if str(error) else type(error).__name__
            trace, index = "".join(traceback.format_exception(error)), ""
        return EnvStepError(f"Env '{self.name}' raised in {where} after {self.env_steps} env steps{index}: {what}",
                            trace)

    def render(self) -> np.ndarray | None:
        render = getattr(self.backend, "render", None)
        return render() if render is not None else None

    def close(self, **kwargs: Any) -> None:
        self.backend.close()

    def __repr__(self) -> str:
        return f"VecEnv({self.name!r}, num_envs={self.num_envs}, backend={self.backend_name!r})"


class GymnasiumBackend:
    """Any gymnasium ``VectorEnv`` built in SAME_STEP mode: gymnasium's Sync/Async vector envs (final
    observations in a masked object array) and ale-py's ``AtariVectorEnv`` (a dense array, meaningful only in the
    rows of finished envs)."""

    def __init__(self, vec: gym.vector.VectorEnv, dense_final_obs: bool = False, native_send_recv: bool = False):
        self.vec = vec
        self.dense_final_obs = dense_final_obs
        self._native_send_recv = native_send_recv  # the vector env's own send/recv (ale-py's AtariVectorEnv)
        self.num_envs = vec.num_envs
        self.single_observation_space = vec.single_observation_space
        self.single_action_space = vec.single_action_space
        self.extra_info: dict[str, Any] = {}  # the envs' own info keys of the last reset/step
        self.final_info: dict[str, Any] = {}  # ... of the last step, ended episodes' last step included

    @classmethod
    def from_env_fns(cls, env_fns: list, asynchronous: bool) -> "GymnasiumBackend":
        mode = gym.vector.AutoresetMode.SAME_STEP
        if not asynchronous:
            return cls(gym.vector.SyncVectorEnv(env_fns, autoreset_mode=mode))
        # Workers ignore SIGINT/SIGTERM: Ctrl-C is for the main process, which saves a checkpoint and then
        # closes the workers; otherwise they die first and the final save fails.
        env_fns = [functools.partial(_without_interrupts, fn) for fn in env_fns]
        # gymnasium logs a failed worker's traceback as a warning before re-raising its exception; ReportErrors
        # has put the index and the traceback into that exception, which VecEnv reports in one line.
        warnings.filterwarnings("ignore", message=r".*ERROR: (Received the following error from Worker|Raising "
                                                  r"the last exception back|Traceback \(most recent call last\))")
        return cls(gym.vector.AsyncVectorEnv(env_fns, autoreset_mode=mode, context="spawn"))

    def reset(self, seed: int | None) -> tuple[np.ndarray, np.ndarray | None]:
        obs, info = self.vec.reset(seed=seed)
        self.extra_info = _extra_info(info)
        return obs, info.get("lives")

    @property
    def asynchronous(self) -> bool:
        """Whether the envs step in their own workers between ``send`` and ``recv``: gymnasium's AsyncVectorEnv
        (processes; ``step_async``/``step_wait``) and ale-py's AtariVectorEnv (a native thread pool; ``send``/
        ``recv``, which in its synchronous mode return every env, in env order)."""
        return isinstance(self.vec, gym.vector.AsyncVectorEnv) or self._native_send_recv

    def step(self, actions: np.ndarray):
        return self._same_step(*self.vec.step(actions))

    def send(self, actions: np.ndarray) -> None:
        if self._native_send_recv:
            self.vec.send(actions)
        else:
            self.vec.step_async(actions)

    def recv(self):
        return self._same_step(*(self.vec.recv() if self._native_send_recv else self.vec.step_wait()))

    def _same_step(self, obs, reward, terminated, truncated, info):
        self.extra_info = _extra_info(info)
        ended = np.logical_or(terminated, truncated)
        self.final_info = _dense_final_info(self.extra_info, info.get("final_info"), ended)
        final_obs = obs
        if ended.any():
            final_obs = obs.copy()
            given = info["final_obs"]
            final_obs[ended] = given[ended] if self.dense_final_obs else np.stack(given[ended])
        return obs, reward, terminated, truncated, final_obs, info.get("lives")

    def render(self) -> np.ndarray | None:
        frames = self.vec.render()
        return None if frames is None else frames[0]

    def close(self) -> None:
        self.vec.close()


_RESERVED_INFO = {"final_obs", "_final_obs", "final_info", "_final_info", "lives", "_lives", "episode", "_episode",
                  "episode_frame_number", "_episode_frame_number", "frame_number", "_frame_number"}


def _extra_info(info: dict) -> dict:
    """The envs' own info keys (and their ``_key`` masks), passed through to ``VecEnv.step``'s info. In SAME_STEP
    mode an env that just reset reports its reset info, so each value describes the returned obs."""
    return {k: v for k, v in info.items() if k not in _RESERVED_INFO} if info else {}


def _dense_final_info(extra: dict, final: dict | None, ended: np.ndarray) -> dict:
    """The step's info for every env: ``extra`` (reset info for ended envs) with the ended envs' rows replaced
    by their last step's info from gymnasium's ``final_info``."""
    if not ended.any() or not final:
        return extra
    dense = dict(extra)
    for key, value in final.items():
        if key.startswith("_") or key in _RESERVED_INFO:
            continue
        mask = np.asarray(final.get(f"_{key}", ended)) & ended
        value = np.asarray(value)
        base = np.asarray(extra[key]).copy() if key in extra else np.zeros_like(value)
        base[mask] = value[mask]
        dense[key] = base
    return dense


def _without_interrupts(env_fn):
    import signal

    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    return env_fn()


class EnvpoolBackend:
    """envpool (C++ thread pool). It autoresets on the *next* step; we reset finished envs explicitly so the
    caller sees SAME_STEP (envpool's ``reset(env_id)`` resets just those envs)."""

    def __init__(self, env_id: str, num_envs: int, seed: int, max_episode_steps: int | None = None, **kwargs: Any):
        self.env_id, self.num_envs, self.seed = env_id, num_envs, seed
        if max_episode_steps is not None:
            kwargs["max_episode_steps"] = max_episode_steps
        self.kwargs = kwargs
        self.vec = self._make(seed)
        self.single_observation_space = self.vec.observation_space
        self.single_action_space = self.vec.action_space
        self._fresh = True

    def _make(self, seed: int):
        import envpool

        return envpool.make(self.env_id, env_type="gymnasium", num_envs=self.num_envs, seed=seed, **self.kwargs)

    def reset(self, seed: int | None) -> tuple[np.ndarray, np.ndarray | None]:
        # envpool seeds only at construction: a seeded reset of a used pool rebuilds it (milliseconds).
        if seed is not None and not (self._fresh and seed == self.seed):
            self.vec.close()
            self.vec, self.seed = self._make(seed), seed
        self._fresh = False
        obs, info = self.vec.reset()
        return obs, info.get("lives")

    asynchronous = True  # send() returns while envpool's threads step the envs; recv() waits for them

    def step(self, actions: np.ndarray):
        self.send(actions)
        return self.recv()

    def send(self, actions: np.ndarray) -> None:
        self.vec.send(np.asarray(actions))

    def recv(self):
        obs, reward, terminated, truncated, info = self.vec.recv()  # all envs, in env order (sync mode)
        ended = np.logical_or(terminated, truncated)
        final_obs = obs
        if ended.any():
            final_obs = obs.copy()
            ids = np.flatnonzero(ended)
            reset_obs, reset_info = self.vec.reset(ids)  # only these rows, ordered by env_id
            obs = obs.copy()
            obs[reset_info["env_id"]] = reset_obs
        return obs, reward, terminated, truncated, final_obs, info.get("lives")

    def close(self) -> None:
        self.vec.close()
