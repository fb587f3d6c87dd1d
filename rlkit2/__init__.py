"""rlkit2: shared parts of the library (collectors, buffers, networks, distributions, normalizers, logger,
checkpoints, the run loop, configs, the rlkit2 command). Imports envs, never agents: an agent's module is imported
by name, through its entry point (rlkit2/agent.py)."""

__version__ = "0.1.0"
