"""``envs.make``: one call from an env id / path / callable to a seeded, checked ``VecEnv``.

Backend choice (``backend="auto"``), measured on the 2-core CI machine (docs/benchmarks.md, "Raw env"):
- Atari ids -> ``ale``: ale-py's native vector env does preprocessing in C++ threads.
- ids envpool supports (MuJoCo v5...), when envpool is installed -> ``envpool``: about 2x gymnasium's sync
  vector env on HalfCheetah-v5 x 8.
- the Collect ids (envs/collect.py) -> ``batched``: the env's own numpy implementation steps all envs at once.
- everything else -> ``sync``. ``async`` (one process per env) is slower than ``sync`` on 2 cores for cheap
  envs; pick it explicitly for slow Python envs on a machine with many cores.
"""

from __future__ import annotations

import functools
from typing import Any, Callable

import gymnasium as gym

from envs.atari import AtariSettings, ale_native_backend, is_atari, make_gymnasium_atari
from envs.collect import COLLECT_IDS, CollectBackend, collect_config, is_collect
from envs.custom import EnvCheckError, EnvSpecLike, check_env, ensure_registered, env_name, resolve_factory
from envs.minigrid import is_minigrid
from envs.minigrid import make_env as make_minigrid_env
from envs.pipeline import PipelinedVecEnv
from envs.vector import EnvpoolBackend, GymnasiumBackend, ReportErrors, StepCount, VecEnv

BACKENDS = ("auto", "sync", "async", "ale", "envpool", "batched")
PIPELINE_BACKENDS = ("envpool", "ale", "async")  # natively asynchronous: envs/pipeline.py


def make(
    env: EnvSpecLike,
    num_envs: int = 1,
    seed: int = 0,
    backend: str = "auto",
    *,
    atari: AtariSettings | None = None,
    max_episode_steps: int | None = None,
    env_kwargs: dict[str, Any] | None = None,
    render_mode: str | None = None,
    check: bool = True,
    pipeline: bool = False,
) -> VecEnv | PipelinedVecEnv:
    """Build ``num_envs`` copies of ``env`` as one ``VecEnv`` (see envs/vector.py for its semantics).

    env: a registered gymnasium id, a ``'module:ClassOrFactory'`` path, or a callable returning a gymnasium.Env.
    seed: env ``i`` is seeded with ``seed + i``.
    backend: one of ``BACKENDS``; ``auto`` picks the fastest that supports the env (module docstring).
    atari: preprocessing for ``ALE/...`` ids (defaults to ``AtariSettings()``).
    max_episode_steps: override the registered time limit (or add one to a custom env).
    env_kwargs: keyword arguments for the env constructor / ``gym.make``.
    render_mode: e.g. ``'rgb_array'`` for video; forces a gymnasium backend.
    check: run ``check_env`` on one instance first so a broken env fails fast with a clear message.
    pipeline: build the envs as two halves that a collector steps in turn, one half's env step overlapping the
        policy's forward pass on the other's observations (envs/pipeline.py); needs ``num_envs >= 2`` and a
        backend in ``PIPELINE_BACKENDS``.
    """
    if not isinstance(num_envs, int) or num_envs < 1:
        raise ValueError(f"num_envs must be a positive int, got {num_envs!r}")
    if pipeline and num_envs < 2:
        raise ValueError(f"pipeline needs at least 2 envs (two halves), got num_envs={num_envs}")
    if backend not in BACKENDS:
        raise ValueError(f"Unknown backend '{backend}'. Allowed: {', '.join(BACKENDS)}")
    name = env_name(env)
    if is_atari(env):
        ensure_registered(env)  # a misspelt game fails here, with suggestions, not as an assertion in ale-py
    env_kwargs = dict(env_kwargs or {})
    atari_settings = (atari or AtariSettings()) if is_atari(env) else None
    if atari_settings is not None and max_episode_steps is not None:
        raise ValueError(f"max_episode_steps does not apply to Atari env '{name}'; set the limit in emulator "
                         f"frames with AtariSettings(max_episode_frames=...) (--atari.max_episode_frames)")
    chosen = _choose_backend(env, backend, render_mode, env_kwargs, max_episode_steps)
    if pipeline and chosen not in PIPELINE_BACKENDS:
        raise ValueError(f"pipeline needs a backend that steps the envs in its own threads or processes "
                         f"({', '.join(PIPELINE_BACKENDS)}), not '{chosen}' (env '{name}'); turn the pipeline off "
                         "or pick one of those backends")

    settings: dict[str, Any] = {"env": name, "num_envs": num_envs, "seed": seed, "backend": chosen}
    if max_episode_steps is not None:
        settings["max_episode_steps"] = max_episode_steps
    if env_kwargs:
        settings["env_kwargs"] = env_kwargs
    if atari_settings is not None:
        settings["atari"] = atari_settings.as_dict()
    build = functools.partial(_build, env, name, chosen, atari_settings, max_episode_steps, env_kwargs, render_mode)
    if not pipeline:
        venv = build(num_envs, seed, 0, StepCount(), check)
        venv.settings = settings
        venv.reset(seed=seed)
        return venv
    steps, first_half = StepCount(), num_envs // 2
    first = build(first_half, seed, 0, steps, check)
    second = build(num_envs - first_half, seed + first_half, first_half, steps, False)  # checked as the first
    first.settings = settings
    venv = PipelinedVecEnv(first, second)
    venv.reset(seed=seed)
    return venv


def _build(env: EnvSpecLike, name: str, chosen: str, atari_settings: AtariSettings | None,
           max_episode_steps: int | None, env_kwargs: dict[str, Any], render_mode: str | None, num_envs: int,
           seed: int, index_offset: int, steps: StepCount, check: bool) -> VecEnv:
    """One VecEnv of envs ``index_offset ... index_offset + num_envs - 1``; env i is seeded with ``seed + i``."""
    if chosen == "ale":
        backend_impl = ale_native_backend(env, num_envs, atari_settings)
    elif chosen == "envpool":
        backend_impl = EnvpoolBackend(env, num_envs, seed, max_episode_steps, **env_kwargs)
    elif chosen == "batched":
        try:
            backend_impl = CollectBackend(num_envs, collect_config(env, **env_kwargs))
        except TypeError as e:
            raise ValueError(f"Env '{name}': bad env_kwargs {env_kwargs} ({e}); see envs/collect.py:CollectConfig") from e
    else:
        factory = _single_env_factory(env, atari_settings, max_episode_steps, env_kwargs)
        if check:
            probe = factory(None)
            try:
                check_env(probe, name, seed=seed)
            finally:
                probe.close()
        env_fns = [functools.partial(_reporting_errors, factory, index_offset + i, render_mode)
                   for i in range(num_envs)]
        backend_impl = GymnasiumBackend.from_env_fns(env_fns, asynchronous=(chosen == "async"))

    return VecEnv(
        backend_impl,
        name=name,
        backend_name=chosen,
        clip_rewards=bool(atari_settings and atari_settings.clip_rewards),
        episodic_life=bool(atari_settings and atari_settings.episodic_life),
        index_offset=index_offset,
        steps=steps,
    )


def _single_env_factory(env: EnvSpecLike, atari: AtariSettings | None, max_episode_steps: int | None,
                        env_kwargs: dict[str, Any]) -> Callable[[str | None], gym.Env]:
    if atari is not None:
        return functools.partial(_atari_factory, env, atari)
    if is_minigrid(env):  # a third-party package through the custom-env (callable) path
        env = functools.partial(make_minigrid_env, env)
    base = resolve_factory(env, **env_kwargs)
    if max_episode_steps is None:
        return base
    return functools.partial(_time_limited, base, max_episode_steps)


def _reporting_errors(factory: Callable[[str | None], gym.Env], index: int, render_mode: str | None) -> gym.Env:
    return ReportErrors(factory(render_mode), index)  # an exception in the env then names its index


def _atari_factory(env_id: str, atari: AtariSettings, render_mode: str | None = None) -> gym.Env:
    return make_gymnasium_atari(env_id, atari, render_mode)


def _time_limited(base: Callable, max_episode_steps: int, render_mode: str | None = None) -> gym.Env:
    inner = base(render_mode)
    while isinstance(inner, gym.wrappers.TimeLimit):  # replace, don't stack, a registered limit
        inner = inner.env
    return gym.wrappers.TimeLimit(inner, max_episode_steps)


def _choose_backend(env: EnvSpecLike, backend: str, render_mode: str | None, env_kwargs: dict,
                    max_episode_steps: int | None) -> str:
    atari = is_atari(env)
    if backend == "ale" and not atari:
        raise ValueError(f"backend 'ale' runs Atari ids only (ALE/...-v5), not '{env_name(env)}' — use backend "
                         "auto (or sync)")
    if backend == "batched" and not (is_collect(env) and max_episode_steps is None):
        raise ValueError(f"backend 'batched' runs the Collect ids ({', '.join(COLLECT_IDS)}) without "
                         f"max_episode_steps (set the limit with env_kwargs max_steps), not '{env_name(env)}'")
    if backend == "envpool" and not _envpool_supports(env):
        raise ValueError(
            f"backend 'envpool' does not support '{env_name(env)}' (or envpool is not installed: "
            "pip install -e '.[envpool]'). Use backend 'sync'."
        )
    if backend != "auto":
        if render_mode is not None and backend in ("ale", "envpool", "batched"):
            raise ValueError(f"backend '{backend}' cannot render; use backend 'sync' for video")
        return backend
    if render_mode is not None:
        return "sync"
    if atari:
        return "ale"
    if is_collect(env) and max_episode_steps is None:
        return "batched"
    if not env_kwargs and _envpool_supports(env):
        return "envpool"
    return "sync"


@functools.lru_cache(maxsize=None)
def _envpool_ids() -> frozenset[str]:
    try:
        import envpool
    except ImportError:
        return frozenset()
    return frozenset(envpool.list_all_envs())


def _envpool_supports(env: EnvSpecLike) -> bool:
    # Only MuJoCo-style ids: envpool's Atari/classic variants differ in preprocessing from ours.
    return isinstance(env, str) and not is_atari(env) and env in _envpool_ids() and env.endswith("-v5") \
        and env.split("-")[0] in MUJOCO_NAMES


MUJOCO_NAMES = {  # gymnasium's MuJoCo env families (also used to pick presets)
    "Ant", "HalfCheetah", "Hopper", "Humanoid", "HumanoidStandup", "InvertedDoublePendulum",
    "InvertedPendulum", "Pusher", "Reacher", "Swimmer", "Walker2d",
}

__all__ = ["make", "BACKENDS", "MUJOCO_NAMES", "EnvCheckError"]
