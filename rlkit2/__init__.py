"""rlkit2: shared parts of the library (collectors, buffers, networks, distributions, normalizers, logger,
checkpoints, the run loop, configs). Imports envs, never agents (except lazily to fill the registry)."""

__version__ = "0.1.0"
