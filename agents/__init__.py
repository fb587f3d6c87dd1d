"""rlkit2's agents. Importing this package registers every built-in agent (rlkit2.agent.AGENTS)."""

from agents import ppo  # noqa: F401  registers 'ppo' and 'a2c'
