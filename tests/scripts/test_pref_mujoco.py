"""pref_mujoco.py: each variant's agent and options, and --rl-set reaching PPO in every variant alike."""

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "scripts" / "bench"))

from pref_mujoco import variant_options  # noqa: E402

from rlkit2.run import resolve_config  # noqa: E402


def test_rl_options_reach_ppo_on_the_true_reward_and_under_the_learned_one():
    agent, options = variant_options("true", ["entropy_coef=0.01"])
    assert (agent, options) == ("ppo", {"entropy_coef": "0.01"})
    assert resolve_config(agent, "Hopper-v5", options)[1].entropy_coef == 0.01

    agent, options = variant_options("1400-absorbing", ["entropy_coef=0.01"])
    assert (agent, options) == ("pref", {"labels": 1400, "absorbing": True, "rl.entropy_coef": "0.01"})
    cfg = resolve_config(agent, "HalfCheetah-v5", options)[1]
    assert (cfg.labels, cfg.absorbing, cfg.rl) == (1400, True, {"entropy_coef": 0.01})


def test_an_rl_option_without_a_value_is_refused_with_the_expected_form():
    done = subprocess.run([sys.executable, str(ROOT / "scripts" / "bench" / "pref_mujoco.py"), "--rl-set",
                           "entropy_coef"], capture_output=True, text=True)
    assert done.returncode == 2 and "expected NAME=VALUE" in done.stderr
