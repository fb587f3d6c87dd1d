import os
import sys
from pathlib import Path

# Toy environments in tests/toy_envs.py are importable as 'toy_envs' (also by 'toy_envs:Class' paths in
# subprocesses, which get PYTHONPATH from the `toy_env_pythonpath` helper below).
TESTS_DIR = Path(__file__).resolve().parent
sys.path.insert(0, str(TESTS_DIR))
os.environ.setdefault("MUJOCO_GL", "egl")


def subprocess_env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(TESTS_DIR), str(TESTS_DIR.parent), env.get("PYTHONPATH", "")])
    return env
