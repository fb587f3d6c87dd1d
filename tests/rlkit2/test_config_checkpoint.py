"""Config overrides (types, unknown names, allowed values), presets, and checkpoint safety."""

import dataclasses
import zipfile

import pytest
import torch

from agents.ppo import OnPolicyConfig
from rlkit2 import checkpoint as ckpt
from rlkit2.config import ConfigError, describe, field_docs, override, parse_cli_overrides
from rlkit2.run import RunConfig, env_family, resolve_config


def test_cli_parsing_and_type_conversion():
    values = parse_cli_overrides(["--lr", "1e-3", "--policy-hidden=32,32", "--normalize_obs", "false",
                                  "--atari.noop_max", "0", "--progress"])
    assert values == {"lr": "1e-3", "policy_hidden": "32,32", "normalize_obs": "false",
                      "atari.noop_max": "0", "progress": "true"}
    cfg = override(OnPolicyConfig(), {k: v for k, v in values.items() if k in OnPolicyConfig.__dataclass_fields__})
    assert cfg.lr == 1e-3 and cfg.policy_hidden == (32, 32) and cfg.normalize_obs is False
    run = override(RunConfig(), {"atari.noop_max": "0", "total_steps": "2e5", "max_episode_steps": "none"})
    assert run.atari.noop_max == 0 and run.total_steps == 200_000 and run.max_episode_steps is None
    # one key of a mapping option: numbers, booleans and none are parsed ('false' must not arrive as a string)
    run = override(RunConfig(), {"env_kwargs.terminate_when_unhealthy": "false", "env_kwargs.size": "7",
                                 "env_kwargs.scale": "0.5", "env_kwargs.goal": "none", "env_kwargs.name": "maze"})
    assert run.env_kwargs == {"terminate_when_unhealthy": False, "size": 7, "scale": 0.5, "goal": None,
                              "name": "maze"}


def test_unknown_option_suggests_close_names():
    with pytest.raises(ConfigError, match=r"Unknown option 'gae_lamda'.*Did you mean: gae_lambda"):
        override(OnPolicyConfig(), {"gae_lamda": "0.9"})
    with pytest.raises(ConfigError, match=r"Unknown option '--lr_rate' for agent 'ppo'"):
        resolve_config("ppo", "CartPole-v1", {"lr_rate": "3"})


@pytest.mark.parametrize("name,value,message", [
    ("batch_mode", "foo", "allowed values: shuffle_transitions, shuffle_trajectories, fixed_trajectories"),
    ("epochs", "ten", "expects an integer"),
    ("epochs", "2.5", "expects an integer"),
    ("lr", "fast", "expects a number"),
    ("normalize_obs", "maybe", "expects true/false"),
    ("gae_lambda", "1.5", r"'gae_lambda' must be in \[0, 1\]"),
    ("lr", "-1", "'lr' must be > 0"),
    ("init_std", "0.0", "must be larger than 'min_std'"),
])
def test_bad_values_are_rejected_with_the_reason(name, value, message):
    with pytest.raises(ConfigError, match=message):
        override(OnPolicyConfig(), {name: value})


def test_bad_run_values():
    with pytest.raises(ConfigError, match="allowed values: auto, sync, async, ale, envpool"):
        override(RunConfig(), {"backend": "gpu"})
    with pytest.raises(ConfigError, match="'num_envs' must be >= 1"):
        override(RunConfig(), {"num_envs": "0"})


def test_every_option_is_documented():
    for cls in (OnPolicyConfig, RunConfig):
        docs = field_docs(cls)
        missing = [f.name for f in dataclasses.fields(cls) if f.name not in docs]
        assert not missing, f"{cls.__name__} fields without a docstring: {missing}"
    assert "--gae_lambda FLOAT (default: 0.9)" in describe(OnPolicyConfig)


def test_preset_precedence():
    assert env_family("ALE/Pong-v5") == "atari" and env_family("Hopper-v5") == "mujoco"
    assert env_family("CartPole-v1") == "classic" and env_family("my.mod:Env") is None
    run, cfg = resolve_config("ppo", "Hopper-v5", {"gae_lambda": "0.95"})
    assert cfg.clip_eps == 0.25 and cfg.value_hidden == (256, 256) and cfg.gae_lambda == 0.95
    run, cfg = resolve_config("ppo", "ALE/Pong-v5")
    assert cfg.torso == "cnn" and cfg.shared_network and cfg.clip_eps == 0.1 and run.total_steps == 10_000_000
    run, cfg = resolve_config("ppo", "Pendulum-v1")
    assert cfg.gamma == 0.9 and run.num_envs == 4  # env-id section beats the family section
    run, cfg = resolve_config("a2c", "Hopper-v5")
    assert cfg.policy_loss == "pg" and cfg.optimizer == "rmsprop_tf" and cfg.value_coef == 1.0 and cfg.normalize_obs and cfg.num_steps == 5


def test_checkpoint_roundtrip_is_atomic_and_weights_only(tmp_path):
    payload = ckpt.make_payload("ppo", {"a": 1}, {"w": torch.arange(3.0), "n": 5}, {"iteration": 2})
    path = ckpt.save_atomic(payload, tmp_path / "c.pt")
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]
    loaded = ckpt.load(path)
    assert loaded["agent_state"]["n"] == 5 and torch.equal(loaded["agent_state"]["w"], torch.arange(3.0))
    before = (torch.rand(2), torch.get_rng_state())
    ckpt.restore_rng(loaded["rng"])  # restores the RNG state saved in make_payload
    torch.set_rng_state(before[1])


def test_truncated_and_foreign_checkpoints_give_clear_errors(tmp_path):
    good = ckpt.save_atomic(ckpt.make_payload("ppo", {}, {}, {}), tmp_path / "good.pt")
    data = good.read_bytes()
    (tmp_path / "trunc.pt").write_bytes(data[: len(data) // 2])
    with pytest.raises(ckpt.CheckpointError, match="not a readable rlkit2 checkpoint"):
        ckpt.load(tmp_path / "trunc.pt")
    torch.save({"model": torch.zeros(1)}, tmp_path / "foreign.pt")
    with pytest.raises(ckpt.CheckpointError, match="not an rlkit2 checkpoint"):
        ckpt.load(tmp_path / "foreign.pt")

    class Evil:
        def __reduce__(self):
            return (print, ("pwned",))

    torch.save({"x": Evil()}, tmp_path / "pickle.pt")
    with pytest.raises(ckpt.CheckpointError, match="not a readable rlkit2 checkpoint"):
        ckpt.load(tmp_path / "pickle.pt")
    with pytest.raises(ckpt.CheckpointError, match="No checkpoint at"):
        ckpt.load(tmp_path / "missing.pt")
    assert zipfile.is_zipfile(good)


def test_checkpoint_dir_keeps_latest(tmp_path):
    d = ckpt.CheckpointDir(tmp_path, keep=2)
    for step in (100, 200, 300):
        d.save_step(ckpt.make_payload("ppo", {}, {}, {}), step)
    assert [p.name for p in d.step_files()] == ["step_000000000200.pt", "step_000000000300.pt"]
    assert d.latest().name == "step_000000000300.pt"


def test_latest_orders_by_steps_not_file_times(tmp_path):
    import os

    d = ckpt.CheckpointDir(tmp_path, keep=5)
    d.save_step(ckpt.make_payload("ppo", {}, {"env_steps": 300}, {}), 300)
    d.save_named(ckpt.make_payload("ppo", {}, {"env_steps": 200}, {}), "final")
    d.save_step(ckpt.make_payload("ppo", {}, {"env_steps": 100}, {}), 100)
    os.utime(tmp_path / "final.pt", (2e9, 2e9))  # a copy that did not keep times: final looks newest
    assert d.latest().name == "step_000000000300.pt"
    d.save_named(ckpt.make_payload("ppo", {}, {"env_steps": 300}, {}), "final")
    assert d.latest().name == "final.pt"


def test_check_ranges_names_the_first_bad_option_and_its_range():
    from dataclasses import dataclass

    from rlkit2.config import ConfigError, check_ranges

    @dataclass
    class Options:
        lr: float = 1e-3
        gamma: float = 0.99
        warmup: int = 0

    check_ranges(Options(), positive=("lr",), unit_interval=("gamma",), non_negative=("warmup",))
    for bad, message in [({"lr": 0.0}, "Option 'lr' must be > 0, got 0.0"),
                         ({"lr": float("nan")}, "Option 'lr' must be > 0, got nan"),
                         ({"gamma": 1.5}, r"Option 'gamma' must be in \[0, 1\], got 1.5"),
                         ({"warmup": -1}, "Option 'warmup' must be >= 0, got -1"),
                         ({"gamma": -1.0, "warmup": -1}, "Option 'gamma'")]:  # groups checked in the order given
        with pytest.raises(ConfigError, match=message):
            check_ranges(Options(**bad), positive=("lr",), unit_interval=("gamma",), non_negative=("warmup",))
