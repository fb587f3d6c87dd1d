"""``rlkit2 export`` (rlkit2/export.py, scripts/export.py) on tiny trained runs, in every format: MuJoCo (PPO,
DSAC), Atari (PPO's CNN on uint8 frames) and a custom discrete env. The exported file gives the actions that
evaluate's agent gives (the run loaded as scripts/evaluate.py loads it) on observations the export never saw, and
it loads and acts in a Python process where rlkit2 cannot be imported."""

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import gymnasium as gym
import numpy as np
import pytest
import torch

from conftest import subprocess_env
from rlkit2 import checkpoint as ckpt
from rlkit2.cli import acting_agent, checkpoint_path, open_run
from rlkit2.export import FORMATS, main as main_export
from rlkit2.run import make_env, resolve_config, train

# TorchScript's deprecation in torch 2.13 (docs/export.md): the files load and act as tested
pytestmark = pytest.mark.filterwarnings("ignore:`torch.jit.load` is deprecated:DeprecationWarning")

ROOT = Path(__file__).resolve().parents[2]
TINY = {"eval_every": 0, "eval_episodes": 1, "eval_envs": 1, "num_envs": 2, "progress": False,
        "tensorboard": False}
RUNS = {
    "ppo-mujoco": ("ppo", "HalfCheetah-v5", {"total_steps": 128, "num_steps": 64, "minibatch_size": 64,
                                             "compile_loss": False}),
    "dsac-mujoco": ("dsac", "HalfCheetah-v5", {"total_steps": 200, "learning_starts": 100, "batch_size": 32,
                                               "hidden": "32,32", "steps_per_iteration": 50,
                                               "compile_update": False}),
    "ppo-atari": ("ppo", "ALE/Pong-v5", {"total_steps": 64, "num_steps": 32, "minibatch_size": 32,
                                         "atari.max_episode_frames": 200, "compile_loss": False}),
    "ppo-custom": ("ppo", "toy_envs:FixedHorizonEnv", {"total_steps": 128, "num_steps": 64, "minibatch_size": 64}),
}
EXPECTED_SPACES = {  # input dtype and shape, output dtype and shape, the JSON's action space (a Box's dtype: the env's)
    "ppo-mujoco": ("float64", [None, 17], "float32", [None, 6], {"type": "Box", "shape": [6], "low": -1, "high": 1}),
    "dsac-mujoco": ("float64", [None, 17], "float32", [None, 6], {"type": "Box", "shape": [6], "low": -1, "high": 1}),
    "ppo-atari": ("uint8", [None, 4, 84, 84], "int64", [None], {"type": "Discrete", "dtype": "int64", "n": 6,
                                                                "start": 0}),
    "ppo-custom": ("float32", [None, 2], "int64", [None], {"type": "Discrete", "dtype": "int64", "n": 2,
                                                           "start": 0}),
}


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """Each tiny run trained once for the module, when a test first asks for it."""
    made: dict[str, Path] = {}
    root = tmp_path_factory.mktemp("runs")

    def get(name: str) -> Path:
        if name not in made:
            agent, env, options = RUNS[name]
            run, cfg = resolve_config(agent, env, {**TINY, **options, "runs_dir": str(root)})
            made[name] = train(run, cfg).run_dir
        return made[name]

    return get


def _agent_actions(run_dir: Path, seed: int = 777) -> tuple[np.ndarray, np.ndarray, gym.Space]:
    """Observations from the run's env (seeds the export's own check does not use) and the actions of the run's
    agent on them, loaded as scripts/evaluate.py loads it."""
    run, agent_config = open_run(run_dir, None, "cpu")
    path = checkpoint_path(run_dir, None)
    env = make_env(run, 3, seed)
    agent = acting_agent(run, agent_config, env, ckpt.load(path), path, "evaluate", other_env=False)
    obs, _ = env.reset(seed=seed)
    seen = [obs]
    for _ in range(4):
        obs, *_ = env.step(agent.act(torch.as_tensor(obs), deterministic=False).numpy())
        seen.append(obs)
    env.close()
    obs = np.concatenate(seen)
    return obs, agent.act(torch.as_tensor(obs), deterministic=True).numpy(), env.single_action_space


# Runs in `python -I -S` from an empty folder: no PYTHONPATH, no current directory, no .pth files, so that
# neither a checkout nor the editable install of rlkit2 (a .pth file) is on the path; only the site-packages
# folders that hold torch, numpy and onnxruntime are added. What docs/export.md shows, in a few lines.
LOADER = textwrap.dedent("""
    import json, sys
    site_dirs, policy, fmt = json.loads(sys.argv[1]), sys.argv[2], sys.argv[3]
    sys.path[:0] = site_dirs
    try:
        import rlkit2
        raise SystemExit(f"rlkit2 is importable here ({rlkit2.__file__}): the test proves nothing")
    except ModuleNotFoundError:
        pass
    import numpy as np
    obs, expected = np.load("obs.npy"), np.load("expected.npy")
    if fmt == "torchscript":
        import torch
        policy = torch.jit.load(policy)
        actions = policy(torch.from_numpy(obs)).numpy()
    elif fmt == "pt2":
        import torch
        policy = torch.export.load(policy).module()
        actions = policy(torch.from_numpy(obs)).numpy()
    else:
        import onnxruntime
        session = onnxruntime.InferenceSession(policy, providers=["CPUExecutionProvider"])
        actions = session.run(None, {"obs": obs})[0]
    assert actions.dtype == expected.dtype and actions.shape == expected.shape, (actions.dtype, actions.shape)
    if expected.dtype.kind == "f":
        np.testing.assert_allclose(actions, expected, rtol=1e-4, atol=1e-5)
    else:
        np.testing.assert_array_equal(actions, expected)
    ours = sorted(name for name in sys.modules if name.split(".")[0] in ("rlkit2", "agents", "envs"))
    assert not ours, ours
    print("same actions", len(actions))
""")


def _load_without_rlkit2(policy: Path, fmt: str, obs: np.ndarray, expected: np.ndarray, folder: Path) -> str:
    folder.mkdir()
    np.save(folder / "obs.npy", obs)
    np.save(folder / "expected.npy", expected)
    site_dirs = [p for p in sys.path if Path(p).name in ("site-packages", "dist-packages")]
    out = subprocess.run([sys.executable, "-I", "-S", "-c", LOADER, json.dumps(site_dirs), str(policy), fmt],
                         cwd=folder, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    return out.stdout


@pytest.mark.parametrize("fmt", ["torchscript", "pt2", "onnx"])
@pytest.mark.parametrize("name", [pytest.param(name, marks=[pytest.mark.slow] if name == "ppo-atari" else [])
                                  for name in RUNS])
def test_an_exported_run_acts_as_evaluate_does_without_rlkit2(runs, tmp_path, capsys, name, fmt):
    if fmt == "onnx":
        pytest.importorskip("onnxruntime")
        pytest.importorskip("onnxscript")
    run_dir = runs(name)
    policy = tmp_path / "shipped" / f"policy{FORMATS[fmt]}"
    assert main_export([str(run_dir), "--format", fmt, "--out", str(policy)]) == 0
    assert f"policy : {policy}" in capsys.readouterr().out

    obs, expected, action_space = _agent_actions(run_dir)
    assert "same actions 15" in _load_without_rlkit2(policy, fmt, obs, expected, tmp_path / "elsewhere")

    spec = json.loads(Path(f"{policy}.json").read_text())
    in_dtype, in_shape, out_dtype, out_shape, action_spec = EXPECTED_SPACES[name]
    assert spec["format"] == fmt and spec["file"] == policy.name
    assert spec["input"] == {"name": "obs", "dtype": in_dtype, "shape": in_shape} == {
        "name": "obs", "dtype": str(obs.dtype), "shape": [None, *obs.shape[1:]]}
    assert spec["output"] == {"name": "action", "dtype": out_dtype, "shape": out_shape}
    assert spec["action_space"] == {**action_spec, "dtype": str(action_space.dtype)}
    assert spec["observation_space"]["dtype"] == in_dtype and spec["observation_space"]["shape"] == in_shape[1:]
    agent, env, _ = RUNS[name]
    assert (spec["agent"], spec["env"]) == (agent, env)
    best = run_dir / "checkpoints" / "best.pt"
    assert spec["checkpoint"] == {"path": str(best), "env_steps": ckpt.load(best)["agent_state"]["env_steps"]}
    if name == "ppo-atari":
        assert spec["env_settings"]["atari"]["frame_stack"] == 4 and "num_envs" not in spec["env_settings"]


def test_the_script_exports_the_final_checkpoint_next_to_the_run_by_default(runs):
    run_dir = runs("ppo-custom")
    out = subprocess.run([sys.executable, str(ROOT / "scripts" / "export.py"), str(run_dir), "--checkpoint", "final"],
                         capture_output=True, text=True, env=subprocess_env(), timeout=300)
    assert out.returncode == 0, out.stderr
    policy = run_dir / "export" / "policy-final.pt"
    assert f"policy : {policy}" in out.stdout and "(torchscript;" in out.stdout
    spec = json.loads((run_dir / "export" / "policy-final.pt.json").read_text())
    assert spec["checkpoint"]["path"] == str(run_dir / "checkpoints" / "final.pt")
    obs, expected, _ = _agent_actions(run_dir, seed=5)
    np.testing.assert_array_equal(torch.jit.load(str(policy))(torch.as_tensor(obs)).numpy(), expected)


def test_an_agent_without_export_module_is_a_one_line_error(runs, capsys, monkeypatch, tmp_path):
    from agents.ppo import OnPolicyAgent

    monkeypatch.delattr(OnPolicyAgent, "export_module")  # as a third-party agent that does not offer one
    code = main_export([str(runs("ppo-custom")), "--out", str(tmp_path / "policy.pt")])
    err = capsys.readouterr().err
    assert code == 2 and "Traceback" not in err and err.count("error: ") == 1, err
    assert "error: Agent 'ppo' cannot be exported: it has no export_module()" in err
    assert list(tmp_path.iterdir()) == []


def test_onnx_without_the_onnx_extra_is_a_one_line_error(runs, capsys, monkeypatch, tmp_path):
    monkeypatch.setitem(sys.modules, "onnxruntime", None)  # import onnxruntime now raises ImportError
    code = main_export([str(runs("ppo-custom")), "--format", "onnx", "--out", str(tmp_path / "policy.onnx")])
    err = capsys.readouterr().err
    assert code == 2 and "Traceback" not in err and err.count("error: ") == 1, err
    assert "error: --format onnx needs " in err and "onnxruntime" in err
    assert "not installed — install the onnx extra: pip install 'rlkit2[onnx]'" in err
    assert list(tmp_path.iterdir()) == []
