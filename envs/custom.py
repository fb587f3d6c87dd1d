"""Resolve any user environment to a factory, and check it honours the gymnasium API before training.

An env can be given three ways:
- a registered gymnasium id, ``"CartPole-v1"`` (``"ALE/Pong-v5"``, ``"HalfCheetah-v5"``...);
- an import path, ``"my_package.my_module:MyEnv"`` -- a ``gymnasium.Env`` subclass or a function returning one;
- a Python callable returning a ``gymnasium.Env``.

``check_env`` steps one instance for a few steps and turns the usual ways an env breaks the API into an
``EnvCheckError`` that names the env, the problem and the fix. It runs before the vector env is built, so
a broken env fails in the first second of a run rather than ten minutes into it. An env that gives different
episodes for the same seed gets a ``NotReproducibleWarning`` (it trains, but same-seed runs differ).
"""

from __future__ import annotations

import copy
import importlib
import inspect
import os
import re
import sys
import warnings
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


# MuJoCo >= 3.4 prints, on every load of gymnasium's HalfCheetah model, that its compiler attribute 'settotalmass' is
# deprecated: 13 identical lines at the start of a run with 8 training and 5 evaluation envs, about a model file that
# is gymnasium's to change and that still compiles to the same model. Exactly these messages are dropped; MuJoCo's
# other warnings go on, as Python warnings.
_KNOWN_MUJOCO_DEPRECATIONS = ("compiler attribute 'settotalmass' is deprecated",)


def mujoco_warning(message: str) -> None:
    """MuJoCo's warning callback: known deprecations in gymnasium's own models are dropped, the rest warned."""
    if not any(known in message for known in _KNOWN_MUJOCO_DEPRECATIONS):
        warnings.warn(f"MuJoCo: {message}", RuntimeWarning, stacklevel=2)


def quiet_known_mujoco_deprecations() -> None:
    import mujoco

    if mujoco.get_mju_user_warning() is not mujoco_warning:
        mujoco.set_mju_user_warning(mujoco_warning)


def resolve_factory(env: EnvSpecLike, **env_kwargs: Any) -> Callable[..., gym.Env]:
    """Return ``factory(render_mode=None) -> gym.Env`` for an id, ``module:attr`` path or callable."""
    if callable(env):
        target = env
    elif isinstance(env, str) and ":" in env:
        module_name, _, attr = env.partition(":")
        module = _import_env_module(env, module_name)
        if not hasattr(module, attr):
            public = sorted(n for n in dir(module) if not n.startswith("_"))
            raise EnvCheckError(
                f"Env '{env}': module '{module_name}' has no attribute '{attr}'. Available: {public[:20]}"
            )
        target = getattr(module, attr)
        if not callable(target):
            raise EnvCheckError(f"Env '{env}': '{attr}' is a {type(target).__name__}, not a class or factory. Fix: "
                                "name a gymnasium.Env class or a function returning one, 'module:ClassOrFactory'.")
    elif isinstance(env, str):
        ensure_registered(env)

        def make_registered(render_mode: str | None = None) -> gym.Env:
            if "mujoco" in str(gym.spec(env).entry_point):
                quiet_known_mujoco_deprecations()  # here: also in the processes of async backends
            return _construct(env, lambda: gym.make(env, render_mode=render_mode, **env_kwargs), env_kwargs,
                              _registered_creator(env))

        return make_registered
    else:
        raise EnvCheckError(
            f"Env spec {env!r} is a {type(env).__name__}; give a registered id, 'module:Class' or a callable."
        )

    accepts_render_mode = _accepts(target, "render_mode")

    def factory(render_mode: str | None = None) -> gym.Env:
        kwargs = dict(env_kwargs)
        if render_mode is not None and accepts_render_mode:
            kwargs["render_mode"] = render_mode
        instance = _construct(env_name(env), lambda: target(**kwargs), env_kwargs, target)
        if not isinstance(instance, gym.Env):
            raise EnvCheckError(
                f"Env '{env_name(env)}': the factory returned a {type(instance).__name__}, not a gymnasium.Env. "
                "Fix: subclass gymnasium.Env (and define observation_space and action_space)."
            )
        return instance

    return factory


def _import_env_module(env: str, module_name: str) -> Any:
    """Import the module of a 'module:Class' env; like ``python -m``, the current directory is searched too (last,
    so that it shadows nothing), as a command (rlkit2 train) run from the folder holding mymodule.py expects."""
    cwd = os.getcwd()
    if cwd not in sys.path and "" not in sys.path:
        sys.path.append(cwd)
    try:
        return importlib.import_module(module_name)
    except ModuleNotFoundError as e:
        top = module_name.split(".")[0]
        if e.name is not None and e.name != module_name and not module_name.startswith(e.name + "."):
            # the env's module was found; something it imports is missing
            raise EnvCheckError(f"Env '{env}': module '{module_name}' imports '{e.name}', which is not installed. "
                                f"Fix: pip install the package that provides '{e.name}'.") from e
        raise EnvCheckError(
            f"Env '{env}': cannot import module '{module_name}' ({e}). Fix: make sure the module is on PYTHONPATH: "
            f"run from the folder that holds {top}.py (or the package folder {top}/); the current directory "
            f"({cwd}) is searched. Or add that folder to PYTHONPATH (export "
            "PYTHONPATH=/path/to/folder), or pip install your package. Write the path 'package.module:ClassOrFactory'."
        ) from e
    except ImportError as e:
        raise EnvCheckError(f"Env '{env}': importing module '{module_name}' failed ({e}). Fix: correct that "
                            "import in the module (or install what it needs).") from e


def _construct(name: str, build: Callable[[], Any], env_kwargs: dict[str, Any], constructor: Any) -> Any:
    """``build()``; a keyword from env_kwargs that the constructor does not take, or a missing optional dependency
    (Box2D...), becomes an EnvCheckError that says what to change."""
    try:
        return build()
    except gym.error.DependencyNotInstalled as e:  # its message names what to pip install
        raise EnvCheckError(f"Env '{name}' needs a package that is not installed: {e}") from None
    except TypeError as e:
        bad = re.search(r"unexpected keyword argument '(\w+)'", str(e))
        if bad is None or bad.group(1) not in env_kwargs:
            raise
        key = bad.group(1)
        takes = _keywords(constructor)
        raise EnvCheckError(
            f"Env '{name}': its constructor takes no argument '{key}' (env_kwargs {env_kwargs}). Fix: drop "
            f"--env_kwargs.{key}" + (f"; it takes: {', '.join(takes)}" if takes else "")
        ) from None


def _keywords(constructor: Any) -> list[str]:
    try:
        params = inspect.signature(constructor).parameters.values()
    except (TypeError, ValueError):
        return []
    return [p.name for p in params if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY) and p.name != "render_mode"]


def _registered_creator(env_id: str) -> Any:
    """The class or function a registered id is built by, for the list of keywords it takes (None if unknown)."""
    try:
        entry_point = gym.spec(env_id).entry_point
        return gym.envs.registration.load_env_creator(entry_point) if isinstance(entry_point, str) else entry_point
    except Exception:  # noqa: BLE001 -- only to improve a message; the id itself is already known to gymnasium
        return None


def _accepts(fn: Callable, name: str) -> bool:
    try:
        params = inspect.signature(fn).parameters
    except (TypeError, ValueError):
        return False
    return name in params or any(p.kind is p.VAR_KEYWORD for p in params.values())


def ensure_registered(env_id: str) -> None:
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
        "or a callable (see README, '2. Plug in custom gymnasium envs')."
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
    _check_seeding(env, name, seed, steps)


class NotReproducibleWarning(UserWarning):
    """An env gives different episodes for the same seed: same-seed runs will differ."""


def _check_seeding(env: gym.Env, name: str, seed: int, steps: int) -> None:
    """Warn (not fail: training still works) when two rollouts from reset(seed=seed) with the same actions differ,
    as they do when reset ignores its seed or the env draws from np.random / random instead of self.np_random."""
    if not _same(_rollout(env, seed, steps), _rollout(env, seed, steps)):
        warnings.warn(
            f"Env '{name}': two resets with seed={seed}, followed by the same actions, gave different observations "
            "or rewards, so runs with the same --seed will differ and cannot be reproduced. Fix: in reset(), call "
            "super().reset(seed=seed) and draw every random number from self.np_random (not np.random or "
            "random).", NotReproducibleWarning, stacklevel=2)


def _rollout(env: gym.Env, seed: int, steps: int) -> list[Any]:
    obs, _ = env.reset(seed=seed)
    env.action_space.seed(seed)
    trajectory = [copy.deepcopy(obs)]
    for _ in range(steps):
        obs, reward, terminated, truncated, _ = env.step(env.action_space.sample())
        trajectory += [copy.deepcopy(obs), float(reward)]
        if terminated or truncated:
            break
    return trajectory


def _same(a: Any, b: Any) -> bool:
    if isinstance(a, dict):
        return isinstance(b, dict) and a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)
    if isinstance(a, (list, tuple)):
        return isinstance(b, (list, tuple)) and len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b))
    try:
        return bool(np.array_equal(np.asarray(a), np.asarray(b), equal_nan=True))
    except TypeError:  # equal_nan on non-numeric arrays
        return bool(np.array_equal(np.asarray(a), np.asarray(b)))


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
