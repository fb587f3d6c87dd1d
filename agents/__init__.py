"""rlkit2's built-in agents, one module each. Each module defines its ``AgentSpec`` (``ppo.py`` two: PPO_SPEC and
A2C_SPEC), declared by name in pyproject.toml's ``[project.entry-points."rlkit2.agents"]``; rlkit2.agent imports a
module only when its agent is asked for, so importing this package imports none of them."""
