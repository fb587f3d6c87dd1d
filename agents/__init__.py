"""rlkit2's agents. Importing this package registers every built-in agent (rlkit2.agent.AGENTS)."""

from agents import agac, dsac, ppo, pref, vpn  # noqa: F401  registers ppo, a2c, dsac, agac, pref and vpn
