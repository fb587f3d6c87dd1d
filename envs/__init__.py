"""rlkit2's vectorized environment layer. Imports nothing from rlkit2 or agents."""

from envs import collect
from envs.atari import AtariSettings, is_atari
from envs.custom import EnvCheckError, NotReproducibleWarning, check_env, env_name, resolve_factory
from envs.make import BACKENDS, make
from envs.vector import EnvStepError, VecEnv

collect.register()  # the project's own envs: rlkit2/Collect-v0, rlkit2/CollectStochastic-v0

__all__ = ["make", "BACKENDS", "VecEnv", "AtariSettings", "EnvCheckError", "EnvStepError", "NotReproducibleWarning",
           "check_env", "env_name", "resolve_factory", "is_atari"]
