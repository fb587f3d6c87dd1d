"""pref_mujoco.py: each variant's agent and options; the pref preset's RL options and --rl-set reach PPO in every
variant alike."""

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "scripts" / "bench"))

from pref_mujoco import shared_rl_options, variant_options  # noqa: E402

from rlkit2.run import resolve_config  # noqa: E402


def test_rl_options_reach_ppo_on_the_true_reward_and_under_the_learned_one():
    shared = shared_rl_options("Hopper-v5", ["gae_lambda=0.9"])
    assert shared == {"entropy_coef": "0.01", "gae_lambda": "0.9"}  # the pref preset's MuJoCo bonus, then --rl-set
    agent, options = variant_options("true", shared)
    assert (agent, options) == ("ppo", {"entropy_coef": "0.01", "gae_lambda": "0.9"})
    cfg = resolve_config(agent, "Hopper-v5", options)[1]
    assert (cfg.entropy_coef, cfg.gae_lambda) == (0.01, 0.9)

    agent, options = variant_options("1400-absorbing", shared)
    assert (agent, options) == ("pref", {"labels": 1400, "absorbing": True, "rl.entropy_coef": "0.01",
                                         "rl.gae_lambda": "0.9"})
    cfg = resolve_config(agent, "HalfCheetah-v5", options)[1]
    assert (cfg.labels, cfg.absorbing, cfg.rl) == (1400, True, {"entropy_coef": 0.01, "gae_lambda": 0.9})


def test_both_variants_train_ppo_alike_and_without_the_bonus_on_request():
    """The true-reward variant gets the entropy bonus the pref preset gives its RL agent, so the comparison stays
    like for like; --rl-set entropy_coef=0 takes it out of both."""
    shared = shared_rl_options("HalfCheetah-v5", ["entropy_coef=0"])
    assert shared == {"entropy_coef": "0"}
    ppo = resolve_config("ppo", "HalfCheetah-v5", variant_options("true", shared)[1])[1]
    pref = resolve_config("pref", "HalfCheetah-v5", variant_options("1400", shared)[1])[1]
    assert ppo.entropy_coef == 0.0 and pref.rl == {"entropy_coef": 0.0}
    assert shared_rl_options("Pendulum-v1", []) == {}  # no MuJoCo preset there


def test_run_options_reach_every_variant_and_pref_options_the_label_variants_only():
    run_set, pref_set = {"atari.repeat_action_probability": "0"}, {"reward_batches": "2", "reward_precision": "bf16"}
    agent, options = variant_options("true", {"cnn_precision": "bf16"}, run_set, pref_set)
    run, cfg = resolve_config(agent, "ALE/Pong-v5", options)
    assert run.atari.repeat_action_probability == 0.0 and cfg.cnn_precision == "bf16"
    assert not hasattr(cfg, "reward_batches")
    agent, options = variant_options("1400", {"cnn_precision": "bf16"}, run_set, pref_set)
    run, cfg = resolve_config(agent, "ALE/Pong-v5", options)
    assert run.atari.repeat_action_probability == 0.0 and cfg.rl == {"cnn_precision": "bf16"}
    assert (cfg.labels, cfg.reward_batches, cfg.reward_precision) == (1400, 2, "bf16")


def test_an_rl_option_without_a_value_is_refused_with_the_expected_form():
    done = subprocess.run([sys.executable, str(ROOT / "scripts" / "bench" / "pref_mujoco.py"), "--rl-set",
                           "entropy_coef"], capture_output=True, text=True)
    assert done.returncode == 2 and "expected NAME=VALUE" in done.stderr
