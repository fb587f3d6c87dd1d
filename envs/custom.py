"""Resolve any user environment to a factory, and check it honours the gymnasium API before training.

An env can be given three ways:
- a registered gymnasium id, ``"CartPole-v1"`` (``"ALE/Pong-v5"``, ``"HalfCheetah-v5"``...);
- an import path, ``"my_package.my_module:MyEnv"`` -- a ``gymnasium.Env`` subclass or a function returning one;
- a Python callable returning a ``gymnasium.Env``.

``check_env`` steps one instance for a few steps and turns the usual ways an env breaks the API into an
``EnvCheckError`` that names the env, the problem and the fix. It runs before the vector env is built, so
a broken env fails in the first second of a run rather than ten minutes into it.
"""

from __future__ import annotations

import importlib
import inspect
from typing import Any, Callable

import gymnasium as gym
import numpy as np

EnvSpecLike = str | Callable[..., gym.Env]


class EnvCheckError(ValueError):
    """An environment does not follow the gymnasium API in a way that would break training."""


def env_name(env: EnvSpecLike) -> str:
    """A short, human-readable name for an env spec, used in run names and error messages."""
    if isinstance(env, str):
        return env
    return getattr(env, "__qualname__", None) or getattr(env, "__name__", None) or type(env).__name__


def resolve_factory(env: EnvSpecLike, **env_kwargs: Any) -> Callable[..., gym.Env]:
    """Return ``factory(render_mode=None) -> gym.Env`` for an id, ``module:attr`` path or callable."""
    if callable(env):
        target = env
    elif isinstance(env, str) and ":" in env:
        module_name, _, attr = env.partition(":")
        try:
            module = importlib.import_module(module_name)
        except ImportError as e:
            raise EnvCheckError(
                f"Env '{env}': cannot import module '{module_name}' ({e}). Fix: make sure the module is "
                "on PYTHONPATH (or installed) and the path is written 'package.module:ClassOrFactory'."
            ) from e
        if not hasattr(module, attr):
            public = sorted(n for n in dir(module) if not n.startswith("_"))
            raise EnvCheckError(
                f"Env '{env}': module '{module_name}' has no attribute '{attr}'. Available: {public[:20]}"
            )
        target = getattr(module, attr)
        if not callable(target):
            raise EnvCheckError(f"Env '{env}': '{attr}' is a {type(target).__name__}, not a class or factory.")
    elif isinstance(env, str):
        _ensure_registered(env)
        return lambda render_mode=None: gym.make(env, render_mode=render_mode, **env_kwargs)
    else:
        raise EnvCheckError(
            f"Env spec {env!r} is a {type(env).__name__}; give a registered id, 'module:Class' or a callable."
        )

    accepts_render_mode = _accepts(target, "render_mode")

    def factory(render_mode: str | None = None) -> gym.Env:
        kwargs = dict(env_kwargs)
        if render_mode is not None and accepts_render_mode:
            kwargs["render_mode"] = render_mode
        instance = target(**kwargs)
        if not isinstance(instance, gym.Env):
            raise EnvCheckError(
                f"Env '{env_name(env)}': the factory returned a {type(instance).__name__}, not a gymnasium.Env. "
                "Fix: subclass gymnasium.Env (and define observation_space and action_space)."
            )
        return instance

    return factory


def _accepts(fn: Callable, name: str) -> bool:
    try:
        params = inspect.signature(fn).parameters
    except (TypeError, ValueError):
        return False
    return name in params or any(p.kind is p.VAR_KEYWORD for p in params.values())


def _ensure_registered(env_id: str) -> None:
    if env_id.startswith("ALE/"):
        import ale_py

        gym.register_envs(ale_py)
    if env_id in gym.registry:
        return
    import difflib

    close = difflib.get_close_matches(env_id, list(gym.registry), n=5, cutoff=0.6)
    hint = f" Did you mean: {', '.join(close)}?" if close else ""
    raise EnvCheckError(
        f"Env '{env_id}' is not a registered gymnasium id.{hint} For your own env pass 'module:Class' "
        "or a callable (see README, 'Custom environments')."
    )


def check_env(env: gym.Env, name: str, steps: int = 8, seed: int = 0) -> None:
    """Raise EnvCheckError if ``env`` breaks the parts of the gymnasium API that training relies on."""

    def fail(problem: str, fix: str) -> None:
        raise EnvCheckError(f"Env '{name}': {problem}. Fix: {fix}.")

    for attr in ("observation_space", "action_space"):
        space = getattr(env, attr, None)
        if not isinstance(space, gym.spaces.Space):
            fail(
                f"{attr} is {'missing' if space is None else type(space).__name__}",
                f"set self.{attr} to a gymnasium.spaces.Space in __init__",
            )
    if not isinstance(env.action_space, (gym.spaces.Box, gym.spaces.Discrete)):
        fail(
            f"action space {env.action_space} is not supported",
            "use a Box (continuous) or Discrete action space, or wrap the env to provide one",
        )
    if not _accepts(env.unwrapped.reset, "seed"):
        fail("reset() does not accept a 'seed' argument", "define reset(self, *, seed=None, options=None) and "
             "call super().reset(seed=seed) so runs are reproducible")
    try:
        out = env.reset(seed=seed)
    except TypeError as e:
        fail(f"reset(seed=...) raised TypeError: {e}", "define reset(self, *, seed=None, options=None)")
    if not (isinstance(out, tuple) and len(out) == 2 and isinstance(out[1], dict)):
        fail("reset() must return (observation, info_dict)", "return obs, {} from reset()")
    _check_obs(out[0], env.observation_space, "reset()", fail)

    env.action_space.seed(seed)
    for _ in range(steps):
        out = env.step(env.action_space.sample())
        if not (isinstance(out, tuple) and len(out) == 5):
            fail(
                f"step() returned {len(out) if isinstance(out, tuple) else type(out).__name__} values, not 5",
                "return (obs, reward, terminated, truncated, info) from step() (gymnasium >= 0.26 API)",
            )
        obs, reward, terminated, truncated, info = out
        _check_obs(obs, env.observation_space, "step()", fail)
        if not np.isscalar(reward) and np.ndim(reward) != 0:
            fail(f"step() returned a reward of shape {np.shape(reward)}", "return a single float reward")
        if not np.isfinite(float(reward)):
            fail(f"step() returned a non-finite reward ({reward})", "make the reward finite")
        if not isinstance(info, dict):
            fail(f"step() returned info of type {type(info).__name__}", "return a dict as the fifth value")
        if terminated or truncated:
            env.reset()


def _check_obs(obs: Any, space: gym.spaces.Space, where: str, fail: Callable[[str, str], None]) -> None:
    if isinstance(space, gym.spaces.Box):
        arr = np.asarray(obs)
        if arr.shape != space.shape:
            fail(f"{where} returned an observation of shape {arr.shape} but observation_space has shape "
                 f"{space.shape}", "make the observation shape match observation_space.shape")
        if arr.dtype != space.dtype:
            fail(f"{where} returned an observation of dtype {arr.dtype} but observation_space has dtype "
                 f"{space.dtype}", f"cast the observation with .astype(np.{space.dtype}) or declare "
                 f"observation_space with dtype=np.{arr.dtype}")
        if np.issubdtype(arr.dtype, np.floating) and not np.all(np.isfinite(arr)):
            fail(f"{where} returned an observation containing NaN or inf", "find where the env produces "
                 "non-finite values (division by zero, unstable physics) and guard it")
    elif isinstance(space, gym.spaces.Discrete):
        if not space.contains(obs):
            fail(f"{where} returned {obs!r}, not in {space}", "return an int within the Discrete space")
    elif not space.contains(obs):
        fail(f"{where} returned an observation outside observation_space {space}",
             "make the observation match the declared space")
