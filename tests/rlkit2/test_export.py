"""Exported policies (rlkit2/export.py) of every agent and the acting options that change its math: the written
file, loaded back with torch.jit.load / torch.export.load / onnxruntime, gives the agent's own act(obs, deterministic=True) on
observations it was not traced on, in batches of other sizes. tests/scripts/test_export_script.py exports trained
runs through the command and loads them without rlkit2."""

from pathlib import Path

import numpy as np
import pytest
import torch

import gymnasium as gym
from rlkit2.agent import get_agent_spec
from rlkit2.cli_errors import UsageError
from rlkit2.export import describe_space, observations, write_policy
from rlkit2.normalizers import ObservationNormalizer
from rlkit2.run import build_agent, make_env, resolve_config

# TorchScript's deprecation in torch 2.13 (docs/export.md): the files load and act as tested
pytestmark = pytest.mark.filterwarnings("ignore:`torch.jit.load` is deprecated:DeprecationWarning")

# (agent, env, options): each row changes what acting computes
CASES = [
    ("ppo", "CartPole-v1", {}),  # Categorical mode over an MLP, normalised observations
    ("ppo", "Pendulum-v1", {}),  # Gaussian mean clipped to [-1, 1], rescaled to [-2, 2]
    ("ppo", "Pendulum-v1", {"action_handling": "tanh", "state_dependent_std": True, "shared_network": True,
                            "obs_clip": 0.5}),
    ("ppo", "MiniGrid-Empty-5x5-v0", {}),  # uint8 grid -> GridCNN, no normalisation
    ("ppo", "ALE/Pong-v5", {}),  # uint8 frames -> Nature-CNN
    ("ppo", "ALE/Pong-v5", {"cnn_precision": "bf16"}),  # the CNN under bfloat16 autocast (slow on most CPUs)
    ("a2c", "HalfCheetah-v5", {}),
    ("dsac", "Pendulum-v1", {}),  # tanh of the mean, rescaled
    ("agac", "CartPole-v1", {}),
    ("agac", "Pendulum-v1", {}),
    ("vpn", "rlkit2/Collect-v0", {"branch": "2,2", "filters": "8,8,8"}),  # the d-step planner, traced
    ("vpn", "rlkit2/Collect-v0", {"method": "nstep_q", "filters": "8,8,8"}),
    ("pref", "Pendulum-v1", {}),  # the inner PPO's policy
]
# pt2 and ONNX (both from torch.export's graph) for a few; the command's tests export PPO on MuJoCo and Atari and
# DSAC in every format (tests/scripts/test_export_script.py)
EXPORT_CASES = [CASES[i] for i in (0, 2, 9, 10)]


def _params(cases: list[tuple]) -> list:
    return [pytest.param(*case, id=f"{case[0]}-{case[1]}-{'-'.join(case[2])}",
                         marks=[pytest.mark.slow] if case[2].get("cnn_precision") == "bf16" else []) for case in cases]


def _agent(name: str, env_id: str, options: dict):
    """An agent built as the evaluate script builds it, with its observation statistics from the env (so that
    normalised observations spread over a few units) and random weights far from their initialisation (so that
    actions spread and reach the clipping and the bounds)."""
    torch.manual_seed(0)  # the weights: the same whichever tests ran before
    run, cfg = resolve_config(name, env_id, {**options, "device": "cpu"})
    env = make_env(run, 4, seed=5)
    agent = build_agent(get_agent_spec(name), run, cfg, env, training=False)
    module = agent.export_module()
    seen = torch.cat(observations(agent, env, seed=99))
    with torch.no_grad():
        for part in module.modules():
            if isinstance(part, ObservationNormalizer):
                part.update(seen.float())
        for param in module.parameters():
            if param.dim() > 1:
                param.add_(torch.randn_like(param) / param[0].numel() ** 0.5)
    return agent, env, seen


def _load(path: Path, fmt: str):
    if fmt == "torchscript":
        policy = torch.jit.load(str(path))
        return lambda obs: policy(torch.as_tensor(obs)).numpy()
    if fmt == "pt2":
        policy = torch.export.load(str(path)).module()
        return lambda obs: policy(torch.as_tensor(obs)).numpy()
    import onnxruntime

    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return lambda obs: session.run(None, {"obs": obs})[0]


def _round_trip(name: str, env_id: str, options: dict, fmt: str, tmp_path: Path) -> None:
    agent, env, seen = _agent(name, env_id, options)
    try:
        path = tmp_path / "policy"
        write_policy(agent, name, observations(agent, env, seed=1), fmt, path)
    finally:
        env.close()
    # observations the trace and its check never saw (other seeds), in a batch size the check did not use
    fresh_obs = seen[:29].numpy()
    want = agent.act(torch.as_tensor(fresh_obs), deterministic=True).numpy()
    got = _load(path, fmt)(fresh_obs)
    assert got.dtype == want.dtype and got.shape == want.shape == (29, *env.single_action_space.shape)
    if np.issubdtype(want.dtype, np.integer):
        np.testing.assert_array_equal(got, want)
        # not one repeated action (MiniGrid's few steps from one start room see nearly one view)
        assert len(np.unique(want)) > 1 or env_id.startswith("MiniGrid")
    else:
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5)
        low, high = env.single_action_space.low, env.single_action_space.high
        assert np.all(got >= low) and np.all(got <= high)


@pytest.mark.parametrize("name,env_id,options", _params(CASES))
def test_a_torchscript_export_acts_as_the_agent(tmp_path, name, env_id, options):
    _round_trip(name, env_id, options, "torchscript", tmp_path)


@pytest.mark.parametrize("fmt", ["pt2", "onnx"])
@pytest.mark.parametrize("name,env_id,options", _params(EXPORT_CASES))
def test_a_pt2_and_an_onnx_export_act_as_the_agent(tmp_path, name, env_id, options, fmt):
    if fmt == "onnx":
        pytest.importorskip("onnxruntime")
        pytest.importorskip("onnxscript")
    _round_trip(name, env_id, options, fmt, tmp_path)


def test_a_policy_that_acts_otherwise_after_tracing_is_refused_and_nothing_is_written(tmp_path, monkeypatch):
    """A trace that fixed a value it should have computed: the check on other batches catches it."""
    agent, env, obs = _agent("ppo", "CartPole-v1", {})
    env.close()
    act = agent.policy_action
    # an action that depends on the batch size: a trace records it as the constant of the example batch
    monkeypatch.setattr(agent, "policy_action", lambda o, deterministic: act(o, deterministic) * 0 + len(o))
    with pytest.raises(RuntimeError, match="does not act as the agent does"):
        write_policy(agent, "ppo", [obs[:2], obs[2:]], "torchscript", tmp_path / "policy.pt")
    assert list(tmp_path.iterdir()) == []


def test_a_bfloat16_cnn_is_not_exported_to_onnx_which_cannot_run_it(tmp_path):
    """onnxruntime's CPU convolutions have no bfloat16 kernel: the export says so before it traces anything."""
    agent, env, obs = _agent("ppo", "MiniGrid-Empty-5x5-v0", {"cnn_precision": "bf16"})
    env.close()
    with pytest.raises(UsageError, match=r"CNN runs in bfloat16 .* --format torchscript, which keeps"):
        write_policy(agent, "ppo", [obs[:2], obs[2:]], "onnx", tmp_path / "policy.onnx")
    assert list(tmp_path.iterdir()) == []


def test_spaces_are_written_as_json_with_their_bounds():
    box = gym.spaces.Box(np.array([-1.5, -np.inf], np.float32), np.array([4.8, np.inf], np.float32))
    assert describe_space(box) == {"type": "Box", "dtype": "float32", "shape": [2], "low": [-1.5, "-inf"],
                                   "high": [4.8, "inf"]}
    frames = gym.spaces.Box(0, 255, (4, 84, 84), np.uint8)
    assert describe_space(frames) == {"type": "Box", "dtype": "uint8", "shape": [4, 84, 84], "low": 0, "high": 255}
    assert describe_space(gym.spaces.Discrete(6, start=1)) == {"type": "Discrete", "dtype": "int64", "n": 6,
                                                                "start": 1}
