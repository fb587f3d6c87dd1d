"""pref_label_stats.py: the tie share and the final ensemble's accuracy on decisive held-out pairs of a finished
preference run, recomputed here from its checkpoint."""

import sys
from pathlib import Path

import numpy as np
import pytest
import torch

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "scripts" / "bench"))

from pref_label_stats import label_stats  # noqa: E402

from rlkit2 import checkpoint as ckpt  # noqa: E402
from rlkit2.preference import RewardEnsemble  # noqa: E402
from rlkit2.run import resolve_config, train  # noqa: E402


def test_label_stats_separate_ties_from_the_decisive_pairs_the_model_orders(tmp_path):
    run, cfg = resolve_config("pref", "Pendulum-v1", {"total_steps": 4096, "labels": 40, "warmup_steps": 1024,
                                                      "pretrain_epochs": 5, "eval_every": 0, "runs_dir": str(tmp_path),
                                                      "progress": False, "tensorboard": False})
    result = train(run, cfg)
    stats = label_stats(Path(result.run_dir))
    state = ckpt.load(Path(result.run_dir) / "checkpoints" / "final.pt", map_location="cpu")["agent_state"]
    c = state["comparisons"]
    mu = c["mu"].numpy()
    assert stats["labels"] == len(mu) == 40 and stats["tie_share"] == pytest.approx(float((mu == 0.5).mean()))
    model = RewardEnsemble((3,), 1, cfg.members, tuple(cfg.reward_hidden))
    model.load_state_dict(state["reward_model"])
    with torch.no_grad():  # member e's segment returns, by hand
        ret = lambda o, a: model(o.flatten(0, 1), a.flatten(0, 1)).view(cfg.members, len(mu), -1).sum(-1)  # noqa: E731
        r1, r2 = ret(c["obs_1"], c["act_1"]), ret(c["obs_2"], c["act_2"])
    counts = dict(zip(state["trainer"]["ids"].tolist(), state["trainer"]["counts"].T.tolist()))
    right, pairs = 0, 0
    for e in range(cfg.members):
        for p, pair_id in enumerate(c["ids"].tolist()):
            if counts[pair_id][e] == 0 and mu[p] != 0.5:
                right += int(bool(r1[e, p] > r2[e, p]) == (mu[p] == 1.0))
                pairs += 1
    assert stats["heldout_decisive_pairs"] == pairs > 0
    assert stats["heldout_decisive_accuracy"] == pytest.approx(right / pairs)
    assert all(a is None or 0 <= a <= 1 for a in stats["member_heldout_decisive_accuracy"])
    assert np.isfinite(stats["ensemble_decisive_accuracy_all"])
    (Path(result.run_dir) / "checkpoints" / "final.pt").unlink()  # as if the run had been interrupted
    with pytest.raises(SystemExit, match="has no checkpoints/final.pt: the run has not finished"):
        label_stats(Path(result.run_dir))



def test_label_stats_refuse_a_run_of_another_agent(tmp_path):
    run, cfg = resolve_config("ppo", "CartPole-v1", {"total_steps": 256, "eval_every": 0, "runs_dir": str(tmp_path),
                                                     "progress": False, "tensorboard": False})
    with pytest.raises(SystemExit, match="a run of agent 'ppo', not of --agent pref"):
        label_stats(Path(train(run, cfg).run_dir))


def test_a_folder_that_is_not_a_run_is_a_clear_exit_for_both_pref_diagnostics(tmp_path):
    from pref_reward_events import play

    with pytest.raises(SystemExit, match="is not a run directory"):
        label_stats(tmp_path)
    with pytest.raises(SystemExit, match="is not a run directory"):
        play(tmp_path, 8, 1, 0)


def test_both_pref_diagnostics_read_an_atari_run_saved_before_the_reward_models_batch_norm(tmp_path):
    """A run from before the paper's batch norm and dropout: its config.json has no reward_batch_norm (so it
    resolves to the new default, true) and its reward model has no batch norm. The diagnostics build the model as
    saved and score it in eval mode."""
    import json

    from pref_reward_events import play

    run, cfg = resolve_config("pref", "ALE/Pong-v5", {
        "total_steps": 256, "labels": 8, "initial_labels": 2, "warmup_steps": 128, "pretrain_epochs": 1,
        "segment_length": 8, "pool_steps": 512, "eval_every": 0, "eval_episodes": 1, "eval_envs": 1,
        "atari.max_episode_frames": 200, "runs_dir": str(tmp_path), "progress": False, "tensorboard": False,
        "num_envs": 2, "rl.num_steps": 64, "rl.minibatch_size": 64, "reward_batch_norm": False, "reward_dropout": 0.0})
    run_dir = Path(train(run, cfg).run_dir)
    record = json.loads((run_dir / "config.json").read_text())
    for key in ("reward_batch_norm", "reward_dropout", "initial_labels", "label_rate_every"):  # not in old runs
        del record["agent_config"][key]
    (run_dir / "config.json").write_text(json.dumps(record))
    stats = label_stats(run_dir)
    assert stats["labels"] == 8 and np.isfinite(stats["ensemble_decisive_accuracy_all"] or 0.0)
    learned, true, *_ = play(run_dir, 16, 1, 0)
    assert learned.shape == true.shape == (16, 1) and np.isfinite(learned).all()
