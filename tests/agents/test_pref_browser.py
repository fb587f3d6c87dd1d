"""Labeling in a real headless browser (Debian's chromium; .ci/run installs it and sets
RLKIT2_REQUIRE_BROWSER=1 so a missing browser fails CI instead of skipping): a --oracle human run (not waiting for
its initial labels) queues pairs, the page shows their clips rendered from the stored MuJoCo states, a rater answers
with the arrow keys (the page leases and answers by POST), and the answers land in the database and then in the
reward model when training goes on."""

import os
import threading
from pathlib import Path

import pytest
from browser import Chromium, find_chromium
from rlkit2 import checkpoint as ckpt
from rlkit2.label_server import LabelServer, segment_renderer
from rlkit2.preference import EnsembleTrainer, RewardEnsemble
from rlkit2.run import resolve_config, resume, train

CHROMIUM = find_chromium()
pytestmark = pytest.mark.skipif(CHROMIUM is None and not os.environ.get("RLKIT2_REQUIRE_BROWSER"),
                                reason="needs chromium (apt-get install chromium); .ci/run installs it")


def test_a_rater_labels_pairs_with_the_keyboard_and_the_reward_model_learns_their_answers(tmp_path):
    overrides = {"total_steps": 1536, "labels": 8, "warmup_steps": 256, "pretrain_epochs": 1, "oracle": "human",
                 "wait_for_initial_labels": False, "backend": "sync", "segment_length": 8, "eval_every": 0,
                 "eval_episodes": 1, "eval_envs": 1, "runs_dir": str(tmp_path), "progress": False, "tensorboard": False,
                 "num_envs": 2, "rl.num_steps": 128, "rl.minibatch_size": 64, "run_name": "people"}
    run, cfg = resolve_config("pref", "HalfCheetah-v5", overrides)
    run_dir = Path(train(run, cfg).run_dir)

    server = LabelServer(run_dir, port=0, renderer=segment_renderer(run_dir), instructions="Prefer the faster cheetah.")
    threading.Thread(target=server.serve_forever, daemon=True).start()
    browser = Chromium(CHROMIUM)
    try:
        browser.open(server.url)
        assert "Prefer the faster cheetah." in browser.wait_for("document.body.innerText")
        keys = ["ArrowLeft", "ArrowLeft", "ArrowUp", "ArrowLeft", "ArrowDown", "ArrowLeft", "ArrowLeft", "ArrowLeft"]
        last = -1
        for i, key in enumerate(keys):
            # the page holds a new pair (its script's `current`), and both of its clips play
            last = int(browser.wait_for(f"(current !== null && current.pair_id !== {last}) ? String(current.pair_id) "
                                        ": null", timeout=60))
            browser.wait_for("document.getElementById('left').readyState >= 2 && "
                             "document.getElementById('right').readyState >= 2", timeout=60)
            browser.press(key)
            for _ in range(300):  # the answer reaches the database
                if server.store.progress()["answered"] == i + 1:
                    break
                threading.Event().wait(0.1)
            assert server.store.progress()["answered"] == i + 1
        assert browser.wait_for("document.getElementById('status').textContent.startsWith('No pairs')", timeout=30)
    finally:
        browser.close()
        server.shutdown()
        server.server_close()

    labels = server.store.labels_since(0)
    assert [l.answer for l in labels] == ["left", "left", "equal", "left", "cant_tell", "left", "left", "left"]
    assert all(l.rater == "rater" for l in labels) and len(list((run_dir / "clips").glob("seg-*-[12].mp4"))) == 16

    resume(run_dir, {"total_steps": 3072, "reward_epochs": 30})  # training reads the answers as it goes on
    state = ckpt.load(run_dir / "checkpoints" / "final.pt", map_location="cpu")["agent_state"]
    c = state["comparisons"]
    assert sorted(c["mu"].tolist()) == [0.5] + [1.0] * 6  # can't tell dropped
    model = RewardEnsemble((17,), 6, members=3)
    model.load_state_dict(state["reward_model"])
    left = EnsembleTrainer(model).segment_returns(c["obs_1"], c["act_1"]).mean(0)
    right = EnsembleTrainer(model).segment_returns(c["obs_2"], c["act_2"]).mean(0)
    preferred = c["mu"] == 1.0
    assert (left[preferred] > right[preferred]).all()  # the reward model learned the rater's preferences
