"""The learning benchmarks' sweep specs (benchmarks/*.toml) mean what their comments say: like-for-like settings
between the variants they compare, resolved exactly as their trials will run."""

from pathlib import Path

import pytest

from rlkit2.run import resolve_config
from rlkit2.sweep import expand, load_spec

ROOT = Path(__file__).resolve().parents[2]


def trials_of(name: str, tmp_path) -> dict[str, object]:
    spec = load_spec(ROOT / "benchmarks" / f"{name}.toml", root=str(tmp_path))
    return {t.key: t for t in expand(spec)}


def test_pref_mujoco_trains_ppo_alike_on_the_true_and_the_learned_reward(tmp_path):
    trials = trials_of("pref_mujoco", tmp_path)
    for env in ("HalfCheetah-v5", "Hopper-v5"):
        true = trials[f"ppo-{env}-true_reward-s0"]
        learned = trials[f"pref-{env}-1400_labels-s0"]
        ppo = resolve_config(true.agent, env, true.overrides)[1]
        pref = resolve_config(learned.agent, env, learned.overrides)[1]
        # the pref preset's RL options on this env are exactly the extra options of the true-reward variant
        assert pref.rl == {"entropy_coef": 0.01}
        assert ppo.entropy_coef == 0.01 and pref.labels == 1400
        assert {k: v for k, v in true.overrides.items() if k not in ("seed", "total_steps", "eval_every")} == {
            "entropy_coef": 0.01}
    assert resolve_config("pref", "Hopper-v5", trials["pref-Hopper-v5-700_labels-s2"].overrides)[1].absorbing


def test_pref_atari_gives_run_options_to_both_and_reward_model_options_to_pref_only(tmp_path):
    trials = trials_of("pref_atari", tmp_path)
    run, ppo = resolve_config("ppo", "ALE/Pong-v5", trials["ppo-Pong-v5-true_reward-s0"].overrides)
    assert run.atari.repeat_action_probability == 0.0 and ppo.cnn_precision == "bf16"
    run, pref = resolve_config("pref", "ALE/Pong-v5", trials["pref-Pong-v5-1400_labels-s0"].overrides)
    assert run.atari.repeat_action_probability == 0.0 and pref.rl == {"cnn_precision": "bf16"}
    assert (pref.reward_batches, pref.reward_batch, pref.pretrain_epochs, pref.labels) == (1, 16, 10, 1400)


def test_dsac_learning_gives_both_libraries_the_same_networks_and_hyperparameters(tmp_path):
    pytest.importorskip("stable_baselines3")
    from rlkit2.peers import resolve_peer

    trials = trials_of("dsac_learning", tmp_path)
    ours = resolve_config("dsac", "HalfCheetah-v5", trials["dsac-HalfCheetah-v5-DSAC-T-s0"].overrides)
    run, cfg = ours
    peer_run, sac = resolve_peer("sb3_sac", trials["sb3_sac-HalfCheetah-v5-SAC_SB3-s0"].overrides)
    assert run.num_envs == peer_run["num_envs"] == 1 and run.total_steps == peer_run["total_steps"]
    assert list(cfg.hidden) == sac["policy_kwargs"]["net_arch"] == [256, 256, 256]
    assert cfg.activation == sac["policy_kwargs"]["activation_fn"] == "gelu"
    assert cfg.critic_lr == cfg.policy_lr == cfg.alpha_lr == sac["learning_rate"] == 3e-4
    assert (cfg.batch_size, cfg.buffer_size, cfg.learning_starts, cfg.gamma, cfg.tau) == (
        sac["batch_size"], sac["buffer_size"], sac["learning_starts"], sac["gamma"], sac["tau"])
    assert cfg.replay_ratio == 1.0 and (sac["train_freq"], sac["gradient_steps"]) == (1, 1)


def test_learning_gives_both_libraries_2048_transitions_per_update(tmp_path):
    pytest.importorskip("stable_baselines3")
    from rlkit2.peers import resolve_peer

    trials = trials_of("learning", tmp_path)
    run, ppo = resolve_config("ppo", "Hopper-v5", trials["ppo-Hopper-v5-rlkit2-s0"].overrides)
    peer_run, sb3 = resolve_peer("sb3_ppo", trials["sb3_ppo-Hopper-v5-sb3-s0"].overrides)
    assert run.num_envs * ppo.num_steps == peer_run["num_envs"] * sb3["n_steps"] == 2048
    assert run.backend == "sync" and (run.eval_episodes, run.eval_envs) == (peer_run["eval_episodes"],
                                                                            peer_run["eval_envs"])
