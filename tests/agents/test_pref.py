"""Learning from preferences end to end (agents/pref.py): PPO on a reward model fitted to synthetic labels
learns Pendulum through the scripts; the RL agent sees only the learned reward; segments never straddle
episodes; the labels survive a resume; bad options get a clear error."""

import dataclasses
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

import envs
from agents.pref import LearnedRewardEnv, SegmentPool
from conftest import subprocess_env
from rlkit2.config import ConfigError
from rlkit2.logger import read_progress
from rlkit2.preference import RewardEnsemble
from rlkit2.run import resolve_config, resume, train

ROOT = Path(__file__).resolve().parents[2]


def test_pref_learns_pendulum_from_synthetic_labels_through_the_scripts(tmp_path):
    """PPO never sees Pendulum's reward, only a 3-member ensemble fitted to 400 synthetic comparisons. A random
    policy scores about -1250 and PPO on the true reward reaches -300 or better in this budget (test_on_policy);
    this run scored -140 when written (training returns about -160 from 50k steps on), so the bar is -500."""
    quiet = ["--progress", "false", "--tensorboard", "false"]
    args = ["--agent", "pref", "--env", "Pendulum-v1", "--total_steps", "80000", "--labels", "400",
            "--eval_every", "0", "--runs_dir", str(tmp_path)]
    out = subprocess.run([sys.executable, str(ROOT / "scripts" / "train.py"), *args, *quiet], capture_output=True,
                         text=True, env=subprocess_env(), timeout=900)
    assert out.returncode == 0, out.stderr
    run_dir = Path(next(l.split(":", 1)[1].strip() for l in out.stdout.splitlines() if l.startswith("run directory")))
    last = [r for r in read_progress(run_dir) if "pref/labels" in r][-1]
    assert last["pref/labels"] == 400 and last["pref/reward_correlation"] > 0.8, last
    ev = subprocess.run([sys.executable, str(ROOT / "scripts" / "evaluate.py"), str(run_dir), "--episodes", "10",
                         "--json"], capture_output=True, text=True, env=subprocess_env(), timeout=300)
    assert ev.returncode == 0, ev.stderr
    result = json.loads(ev.stdout)
    assert result["return_mean"] >= -500, result  # evaluated on the true reward


def test_the_rl_agent_sees_only_the_learned_reward():
    env = envs.make("Pendulum-v1", 2, seed=0)
    model = RewardEnsemble((3,), 1, members=2)
    pool = SegmentPool(100, 2, (3,), np.float32, 1)
    wrapped = LearnedRewardEnv(env, model, pool, 1, torch.device("cpu"))
    obs, _ = wrapped.reset(seed=0)
    actions = np.array([[0.5], [-1.0]], np.float32)
    _, reward, _, _, info = wrapped.step(actions)
    expected = model.reward(torch.as_tensor(obs), torch.as_tensor(actions)).numpy()
    np.testing.assert_allclose(reward, expected, rtol=1e-6)
    assert (info["true_reward"] < 0).all() and not np.allclose(reward, info["true_reward"])
    np.testing.assert_array_equal(pool.obs[0], obs)  # the pool holds (o_t, a_t, true r_t)
    np.testing.assert_array_equal(pool.rewards[0], info["true_reward"])


def test_segments_never_straddle_an_episode_end():
    pool = SegmentPool(60, 2, (1,), np.float32, 1)
    episode = np.array([0, 1])
    for t in range(30):
        if t in (7, 19):  # env 0's episodes end after steps 6 and 18
            episode = np.array([episode[0] + 2, episode[1]])
        pool.add(np.array([[t], [t]], np.float32), np.zeros((2, 1), np.float32), np.zeros(2, np.float32), episode)
    rows, env, mask = pool.sample_segments(200, 5, np.random.default_rng(0))
    ids = pool.episode[rows, env[:, None]]
    assert (ids == ids[:, :1]).all() and (env == 0).any() and (env == 1).any() and not mask.any()
    assert pool.sample_segments(1, 31, np.random.default_rng(0)) is None  # longer than the pool


def test_absorbing_segments_run_past_terminations_but_never_past_truncations():
    """One env, episodes of steps 0-6 (terminated), 7-18 (truncated), 19-29. With absorbing states a segment may
    run past step 6, its steps after it absorbing (rows repeat step 6); never past step 18."""
    pool = SegmentPool(30, 1, (1,), np.float32, 1)
    for t in range(30):
        episode = np.array([0 if t < 7 else 1 if t < 19 else 2])
        pool.add(np.array([[t]], np.float32), np.zeros((1, 1), np.float32), np.ones(1, np.float32), episode,
                 terminated=np.array([t == 6]))
    rows, env, mask = pool.sample_segments(500, 5, np.random.default_rng(0), absorbing=True)
    starts = rows[:, 0]
    assert set(starts.tolist()) == set(range(0, 15)) | set(range(19, 26))  # 15-18 would cross the truncation
    for r, m in zip(rows, mask):
        if r[0] <= 6:  # in the terminated episode: real steps up to 6, then absorbing
            real = min(5, 7 - r[0])
            assert (r[:real] == np.arange(r[0], r[0] + real)).all() and (r[real:] == 6).all()
            assert (m == (np.arange(5) >= real)).all()
        else:
            assert not m.any() and (r == np.arange(r[0], r[0] + 5)).all()
    assert mask[starts == 4].any() and not mask[starts == 2].any()


def test_absorbing_states_price_a_termination_for_the_rl_agent(tmp_path):
    """The reward model sees absorbing steps (zero obs, flag set); a terminated step earns r_hat(s, a) plus
    r_hat(absorbing) * gamma / (1 - gamma), and the oracle counts absorbing steps as 0 true reward."""
    import envs
    from agents.pref import PrefAgent, PrefConfig
    from rlkit2.agent import BuildContext
    from rlkit2.config import override

    assert resolve_config("pref", "Hopper-v5")[1].absorbing  # the preset: on for envs that terminate
    assert not resolve_config("pref", "HalfCheetah-v5")[1].absorbing
    env = envs.make("tests.toy_envs:FixedHorizonEnv", num_envs=2, seed=0)  # terminates after 8 steps
    cfg = override(PrefConfig(), {"absorbing": "true", "labels": 20, "warmup_steps": 64, "segment_length": 6,
                                  "pretrain_epochs": 1, "rl.gamma": "0.9", "rl.num_steps": "16",
                                  "rl.minibatch_size": "16"})
    ctx = BuildContext(env=env, device=torch.device("cpu"), total_steps=256, seed=0, threads_collect=1,
                       threads_update=1)
    with pytest.raises(ConfigError, match="needs the RL agent's gamma < 1"):
        PrefAgent(override(cfg, {"rl.gamma": "1.0"}), ctx)
    agent = PrefAgent(cfg, ctx)
    assert agent.env.absorbing_tail == pytest.approx(9.0) and agent.pool.actions.shape[-1] == 2 + 1
    stats = agent.train_iteration()
    assert np.isfinite(stats["pref/absorbing_reward"])
    c = agent.comparisons
    flags = torch.cat([c["act_1"][..., -1], c["act_2"][..., -1]])  # [2P, K]
    assert flags.any() and not flags.all()  # some segments ran into the absorbing state
    absorbing_obs = torch.cat([c["obs_1"], c["obs_2"]])[flags.bool()]
    assert (absorbing_obs == 0).all()
    # the oracle's returns: +1 per matching action on real steps only (FixedHorizonEnv), 0 on absorbing steps
    assert (c["true_returns"][:, 0] <= (1 - c["act_1"][..., -1]).sum(1)).all()

    obs, _ = agent.env.reset(seed=3)
    r_abs = agent.env.absorbing_reward()
    for step in range(8):
        actions = np.zeros(2, np.int64)
        with torch.no_grad():
            expected = agent.model.reward(torch.as_tensor(obs), torch.as_tensor(agent.env.model_input(actions))).numpy()
        obs, reward, terminated, truncated, _ = agent.env.step(actions)
        if step < 7:
            assert not terminated.any()
            np.testing.assert_allclose(reward, expected, rtol=1e-5, atol=1e-6)
    assert terminated.all()  # the 8th step ends both episodes: the absorbing tail is added
    np.testing.assert_allclose(reward, expected + 9.0 * r_abs, rtol=1e-5, atol=1e-5)


def test_labels_and_reward_model_survive_a_resume(tmp_path):
    overrides = {"total_steps": 4096, "stop_after_steps": 2048, "labels": 40, "warmup_steps": 512, "pretrain_epochs": 2,
                 "eval_every": 0, "eval_episodes": 2, "runs_dir": str(tmp_path), "progress": False, "tensorboard": False,
                 "num_envs": 4, "rl.num_steps": 64}
    run, cfg = resolve_config("pref", "Pendulum-v1", overrides)
    first = train(run, cfg)
    assert first.status == "interrupted"
    from rlkit2 import checkpoint as ckpt

    path = Path(first.run_dir) / "checkpoints"
    saved = ckpt.load(sorted(path.glob("*.pt"))[-1], map_location="cpu")["agent_state"]
    labels_then = len(saved["comparisons"]["mu"])
    assert labels_then >= 10 and saved["extra_steps"] == 512
    second = resume(first.run_dir, {"stop_after_steps": 0})
    assert second.status == "finished"
    final = ckpt.load(path / "final.pt", map_location="cpu")["agent_state"]
    assert len(final["comparisons"]["mu"]) == 40  # the old labels kept, the rest asked for
    torch.testing.assert_close(final["comparisons"]["mu"][:labels_then], saved["comparisons"]["mu"])


@pytest.mark.parametrize("option,value,message", [
    ("rl.no_such_option", "1", r"--rl.no_such_option are not options of agent 'ppo'"),
    ("rl_agent", "dsac", "cannot train on the learned reward"),
    ("noise", "1.5", "'noise' must be in"),
    ("normalization_trim", "0.5", "'normalization_trim' must be in"),
    ("reward_clip", "-1", "reward_clip"),
    ("reward_dropout", "1.0", r"'reward_dropout' must be in \[0, 1\)"),
    ("initial_labels", "500", r"'initial_labels' \(500\) is more than 'labels' \(300\).*lower --initial_labels"),
    ("initial_labels", "-1", "'initial_labels' must be >= 0"),
    ("label_rate_every", "-5", "'label_rate_every' must be >= 0"),
    ("reward_dropout", "-0.1", r"'reward_dropout' must be in \[0, 1\)"),
    ("oracle", "human", "needs clips, rendered from Atari frames or from MuJoCo simulator states"),
])
def test_bad_options_get_a_clear_error(tmp_path, option, value, message):
    with pytest.raises(ConfigError, match=message):
        run, cfg = resolve_config("pref", "Pendulum-v1", {option: value, "runs_dir": str(tmp_path), "progress": False,
                                                          "total_steps": 1000})
        train(run, cfg)


def test_the_mujoco_preset_gives_the_rl_agent_an_entropy_bonus_that_rl_options_merge_with():
    """[mujoco.agent] sets "rl.entropy_coef" = 0.01 (docs/benchmarks.md: the entropy batch); a --rl.OPTION adds
    to it rather than replacing the preset's dict, and --rl.entropy_coef overrides it."""
    from agents.pref import _build_rl_agent
    from rlkit2.agent import BuildContext

    assert resolve_config("pref", "Hopper-v5")[1].rl == {"entropy_coef": 0.01}
    _, cfg = resolve_config("pref", "HalfCheetah-v5", {"rl.lr": "1e-4"})
    assert cfg.rl == {"entropy_coef": 0.01, "lr": 1e-4}
    env = envs.make("HalfCheetah-v5", num_envs=1, seed=0)
    ctx = BuildContext(env=env, device=torch.device("cpu"), total_steps=1000, seed=0, threads_collect=1,
                       threads_update=1)
    inner = _build_rl_agent(cfg, ctx)
    assert inner.cfg.entropy_coef == 0.01 and inner.cfg.lr == 1e-4
    assert inner.cfg.gamma == resolve_config("ppo", "HalfCheetah-v5")[1].gamma  # the rest: PPO's MuJoCo preset
    env.close()
    assert resolve_config("pref", "Hopper-v5", {"rl.entropy_coef": "0"})[1].rl == {"entropy_coef": 0.0}
    assert resolve_config("pref", "Hopper-v5", {"rl": {"lr": 1e-4}})[1].rl == {"entropy_coef": 0.01, "lr": 1e-4}
    assert resolve_config("pref", "Pendulum-v1")[1].rl == {}  # not a MuJoCo env: PPO's own preset as it is


def test_resuming_with_an_rl_option_keeps_the_saved_rl_options(tmp_path):
    """A resumed run's config.json holds the whole rl dict; --rl.lr on resume adds to it (it used to replace it,
    dropping the preset's entropy bonus and the user's own --rl options)."""
    from rlkit2.config import to_dict
    from rlkit2.run import load_run_config

    run, cfg = resolve_config("pref", "Hopper-v5", {"rl.gamma": "0.98"})
    (tmp_path / "config.json").write_text(json.dumps({"agent": "pref", "run": to_dict(run),
                                                      "agent_config": to_dict(cfg)}))
    assert load_run_config(tmp_path)[1].rl == {"entropy_coef": 0.01, "gamma": 0.98}
    assert load_run_config(tmp_path, {"rl.lr": "1e-4"})[1].rl == {"entropy_coef": 0.01, "gamma": 0.98, "lr": 1e-4}


def test_a_fifo_of_comparisons_still_asks_for_exactly_the_scheduled_labels(tmp_path):
    overrides = {"total_steps": 3072, "labels": 60, "max_comparisons": 25, "warmup_steps": 512, "pretrain_epochs": 1,
                 "eval_every": 0, "eval_episodes": 2, "runs_dir": str(tmp_path), "progress": False, "tensorboard": False,
                 "num_envs": 4, "rl.num_steps": 64}
    run, cfg = resolve_config("pref", "Pendulum-v1", overrides)
    result = train(run, cfg)
    from rlkit2 import checkpoint as ckpt

    state = ckpt.load(Path(result.run_dir) / "checkpoints" / "final.pt", map_location="cpu")["agent_state"]
    assert state["labels_asked"] == 60 and len(state["comparisons"]["mu"]) == 25
    assert state["comparisons"]["ids"].tolist() == list(range(35, 60))  # the newest 25


def _pair_clips(run_dir: Path) -> dict[int, tuple[str, str]]:
    """The clip names of every pair in the run's label store, by pair id."""
    import sqlite3

    db = sqlite3.connect(run_dir / "labels.sqlite")
    try:
        return {i: (c1, c2) for i, c1, c2 in db.execute("SELECT id, clip_1, clip_2 FROM pairs")}
    finally:
        db.close()


def _fetch_clip(run_dir: Path, name: str) -> tuple[int, bytes]:
    """GET /clips/NAME from the run's labeling page (rendered on request): (HTTP status, body)."""
    import http.client
    import threading

    from rlkit2.label_server import LabelServer, segment_renderer

    server = LabelServer(run_dir, port=0, renderer=segment_renderer(run_dir))
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        conn = http.client.HTTPConnection(*server.server_address[:2], timeout=60)
        conn.request("GET", f"/clips/{name}")
        response = conn.getresponse()
        return response.status, response.read()
    finally:
        server.shutdown()
        server.server_close()


def test_labels_from_people_flow_through_the_store_and_the_page(tmp_path, monkeypatch):
    """--oracle human with --wait_for_initial_labels false: a warning, and RL starts at once; pairs go to the run's
    label store with their MuJoCo states on disk; the page renders a clip from them; answers (here a script acting
    as the rater) reach the comparisons when training goes on, and the reward model is pretrained on them then."""
    from agents.pref import PrefAgent
    from rlkit2.labels import LabelStore

    overrides = {"total_steps": 1536, "labels": 12, "warmup_steps": 256, "pretrain_epochs": 3, "oracle": "human",
                 "wait_for_initial_labels": False, "backend": "sync", "segment_length": 8, "eval_every": 0,
                 "eval_episodes": 1, "eval_envs": 1, "runs_dir": str(tmp_path), "progress": False,
                 "tensorboard": False, "num_envs": 2, "rl.num_steps": 128, "rl.minibatch_size": 64,
                 "run_name": "human"}
    run, cfg = resolve_config("pref", "HalfCheetah-v5", overrides)
    with pytest.warns(UserWarning, match="RL starts on an untrained reward model"):
        first = train(run, cfg)
    run_dir = Path(first.run_dir)
    store = LabelStore(run_dir / "labels.sqlite")
    assert store.progress()["pairs"] == 12 and store.progress()["answered"] == 0  # nobody answered: training went on
    clip_1 = _pair_clips(run_dir)[0][0]  # pair 0's first clip, rendered from its stored MuJoCo states
    assert np.load(run_dir / "segments" / clip_1.replace(".mp4", ".npy")).shape == (8, 18)

    status, body = _fetch_clip(run_dir, clip_1)
    assert status == 200 and body[4:8] == b"ftyp"

    answers = ["left", "right", "equal", "cant_tell"] * 3
    for answer in answers:
        lease = store.lease("script")
        store.submit(lease.pair_id, lease.token, answer, "script")
    fits = []
    real_fit = PrefAgent._fit
    monkeypatch.setattr(PrefAgent, "_fit", lambda self, epochs, batches: fits.append((epochs, self.num_labels))
                        or real_fit(self, epochs, batches))
    second = resume(run_dir, {"total_steps": 2048, "labels": 12})
    assert second.status == "finished" and fits[0] == (3, 9)  # pretraining on the answers, then the usual fits
    from rlkit2 import checkpoint as ckpt

    state = ckpt.load(run_dir / "checkpoints" / "final.pt", map_location="cpu")["agent_state"]
    assert sorted(state["comparisons"]["mu"].tolist()) == sorted([1.0, 0.0, 0.5] * 3)  # can't tell: dropped
    assert state["pending"] == {} and state["label_seq"] == 12


HUMAN_RUN = {"total_steps": 1024, "labels": 8, "warmup_steps": 256, "pretrain_epochs": 3, "oracle": "human",
             "backend": "sync", "segment_length": 8, "eval_every": 0, "eval_episodes": 1, "eval_envs": 1,
             "progress": False, "tensorboard": False, "num_envs": 2, "rl.num_steps": 128, "rl.minibatch_size": 64}


def _watch_human_run(monkeypatch, events: list) -> None:
    """Record, in ``events``, each fit of the reward model as ("fit", epochs, comparisons, parameters changed)
    and each RL iteration as ("rl",); poll the store fast and report the wait every 0.2 s."""
    import agents.pref as pref

    monkeypatch.setattr(pref, "WAIT_POLL_SECONDS", 0.02, raising=False)
    monkeypatch.setattr(pref, "WAIT_REPORT_SECONDS", 0.2, raising=False)
    real_fit, real_build = pref.PrefAgent._fit, pref._build_rl_agent

    def fit(self, epochs, batches):
        before = [p.detach().clone() for p in self.model.parameters()]
        stats = real_fit(self, epochs, batches)
        changed = any(not torch.equal(a, b) for a, b in zip(before, self.model.parameters()))
        events.append(("fit", epochs, self.num_labels, changed))
        return stats

    def build(cfg, ctx):
        agent = real_build(cfg, ctx)
        iteration = agent.train_iteration
        agent.train_iteration = lambda: events.append(("rl",)) or iteration()
        return agent

    monkeypatch.setattr(pref.PrefAgent, "_fit", fit)
    monkeypatch.setattr(pref, "_build_rl_agent", build)


def _store_when_ready(run_dir: Path, pairs: int, timeout: float = 120.0):
    """The run's label store once it holds ``pairs`` pairs (the run asked for its initial labels)."""
    import time

    from rlkit2.labels import LabelStore

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if (run_dir / "labels.sqlite").exists():
            store = LabelStore(run_dir / "labels.sqlite")
            if store.progress()["pairs"] >= pairs:
                return store
        time.sleep(0.05)
    raise AssertionError(f"the run never stored {pairs} pairs")


def test_a_human_run_waits_for_the_initial_labels_and_pretrains_before_rl(tmp_path, monkeypatch, capsys):
    """Issue 20, item 7 (the paper: label the initial comparisons, pretrain, then RL): with --oracle human the run
    waits, saying periodically how many initial pairs are answered and where to answer, until a person (a thread
    answering through the store, slowly) has answered both initial pairs; then the reward model is pretrained
    (pretrain_epochs passes, its weights change) before the first RL iteration. The run used to start RL at once
    on an untrained model."""
    import threading
    import time

    events: list = []
    _watch_human_run(monkeypatch, events)
    run_dir = tmp_path / "wait"

    def person():
        store = _store_when_ready(run_dir, 2)
        time.sleep(0.5)  # a trainer that does not wait starts RL meanwhile
        for answer in ("left", "right"):
            lease = store.lease("ana")
            store.submit(lease.pair_id, lease.token, answer, "ana")
            events.append(("answer", lease.pair_id))
            time.sleep(0.3)

    thread = threading.Thread(target=person, daemon=True)
    thread.start()
    run, cfg = resolve_config("pref", "HalfCheetah-v5", {**HUMAN_RUN, "runs_dir": str(tmp_path), "run_name": "wait"})
    started = time.monotonic()
    assert train(run, cfg).status == "finished"
    thread.join(timeout=60)
    first_rl = events.index(("rl",))
    assert [e[0] for e in events[:first_rl]] == ["answer", "answer", "fit"], events
    assert events[first_rl - 1] == ("fit", 3, 2, True)  # pretraining: 3 passes over the 2 answers, weights moved
    out = capsys.readouterr().out
    reports = [line for line in out.splitlines() if "answered so far" in line]
    assert "0 of 2 answered so far" in reports[0] and "http://127.0.0.1:8765" in reports[0]
    assert f"rlkit2 label {run_dir}" in reports[0] and "the 2 initial pairs are answered" in out
    assert len(reports) <= 2 + (time.monotonic() - started) / 0.2  # every 0.2 s, not every poll (0.02 s)


def test_a_stop_while_waiting_for_initial_labels_saves_and_a_resume_waits_on(tmp_path, monkeypatch):
    """SIGTERM while the run waits for the initial labels: the run saves a checkpoint and exits as 'interrupted'
    without an RL step, like an interrupted run loop; the answer given before the stop and the one given while
    the run was down both reach pretraining after --resume."""
    import os
    import signal
    import threading
    import time

    from rlkit2 import checkpoint as ckpt

    events: list = []
    _watch_human_run(monkeypatch, events)
    run_dir = tmp_path / "stop"

    def person_then_stop():
        store = _store_when_ready(run_dir, 2)
        lease = store.lease("ana")
        store.submit(lease.pair_id, lease.token, "left", "ana")
        time.sleep(0.3)
        handler = signal.getsignal(signal.SIGTERM)
        if type(getattr(handler, "__self__", None)).__name__ == "_StopFlag":  # only into the run loop's handler
            os.kill(os.getpid(), signal.SIGTERM)

    thread = threading.Thread(target=person_then_stop, daemon=True)
    thread.start()
    run, cfg = resolve_config("pref", "HalfCheetah-v5", {**HUMAN_RUN, "runs_dir": str(tmp_path), "run_name": "stop"})
    result = train(run, cfg)
    thread.join(timeout=60)
    assert result.status == "interrupted" and ("rl",) not in events and not any(e[0] == "fit" for e in events)
    state = ckpt.load(result.checkpoint, map_location="cpu")["agent_state"]
    assert state["started"] and not state["pretrained"] and len(state["initial_pairs"]) == 2
    assert len(state["pending"]) == 1 and state["comparisons"]["mu"].tolist() == [1.0]  # the answer is saved

    store = _store_when_ready(run_dir, 2)  # the other initial pair is answered while the run is down
    lease = store.lease("ben")
    store.submit(lease.pair_id, lease.token, "equal", "ben")
    assert resume(run_dir).status == "finished"
    first_rl = events.index(("rl",))
    assert events[first_rl - 1] == ("fit", 3, 2, True)  # both answers, nothing lost


def test_a_resumed_human_run_never_reuses_a_pair_id_or_rewrites_a_stored_segment(tmp_path):
    """Issue 20, item 6: a session stores pairs after its last checkpoint and dies before the next one; the run is
    resumed from that checkpoint. Its new pairs must get ids the store has not given out, and no file of a pair
    already stored may change (ids used to restart at the checkpoint's labels_asked: the resumed run overwrote
    those pairs' segment files, then died with an IntegrityError)."""
    import shutil

    from rlkit2.labels import LabelStore

    overrides = {"total_steps": 2048, "stop_after_steps": 256, "labels": 12, "warmup_steps": 256,
                 "pretrain_epochs": 1, "oracle": "human", "wait_for_initial_labels": False, "backend": "sync",
                 "segment_length": 8, "eval_every": 0, "eval_episodes": 1, "eval_envs": 1, "runs_dir": str(tmp_path),
                 "progress": False, "tensorboard": False, "num_envs": 2, "rl.num_steps": 128,
                 "rl.minibatch_size": 64, "run_name": "crash"}
    run, cfg = resolve_config("pref", "HalfCheetah-v5", overrides)
    run_dir = Path(train(run, cfg).run_dir)
    shutil.copytree(run_dir / "checkpoints", tmp_path / "saved")  # the last checkpoint before the crash
    assert resume(run_dir, {"stop_after_steps": 512}).status == "interrupted"  # stores more pairs, then "dies"
    shutil.rmtree(run_dir / "checkpoints")
    shutil.copytree(tmp_path / "saved", run_dir / "checkpoints")
    before = _pair_clips(run_dir)
    files = {p.name: (p.read_bytes(), p.stat().st_mtime_ns) for p in (run_dir / "segments").iterdir()}
    assert len(before) > 3 and len(files) == 2 * len(before)

    assert resume(run_dir, {"stop_after_steps": 0}).status == "finished"
    after = _pair_clips(run_dir)
    new_ids = set(after) - set(before)
    assert new_ids and min(new_ids) > max(before) and {i: after[i] for i in before} == before  # old pairs untouched
    new_clips = [c for i in new_ids for c in after[i]]
    assert not set(new_clips) & {c for pair in before.values() for c in pair}  # new pairs, new files
    for name, (data, mtime) in files.items():  # every file of an old pair byte-identical, never rewritten
        path = run_dir / "segments" / name
        assert path.read_bytes() == data and path.stat().st_mtime_ns == mtime, name
    from rlkit2 import checkpoint as ckpt

    pending = ckpt.load(run_dir / "checkpoints" / "final.pt", map_location="cpu")["agent_state"]["pending"]
    assert new_ids <= {int(i) for i in pending} <= set(after)  # the new pairs wait for answers under their ids
    assert LabelStore(run_dir / "labels.sqlite").progress()["pairs"] == len(after)


def test_atari_labels_from_people_show_the_frames_the_agent_saw(tmp_path):
    """--oracle human on Atari: each segment is stored as the newest frame of each observation stack (uint8
    [K, 84, 84]) and the page serves it as an mp4, scaled up 4x, at Atari's 15 agent steps per second."""
    import imageio.v3 as iio

    from rlkit2 import checkpoint as ckpt

    overrides = {"total_steps": 384, "labels": 4, "initial_labels": 1, "warmup_steps": 128, "pretrain_epochs": 1,
                 "oracle": "human", "wait_for_initial_labels": False, "segment_length": 8, "pool_steps": 512,
                 "eval_every": 0, "eval_episodes": 1, "eval_envs": 1, "atari.max_episode_frames": 200,
                 "runs_dir": str(tmp_path), "progress": False, "tensorboard": False, "num_envs": 2,
                 "rl.num_steps": 64, "rl.minibatch_size": 64,
                 "run_name": "atari"}
    run, cfg = resolve_config("pref", "ALE/Pong-v5", overrides)
    result = train(run, cfg)
    run_dir = Path(result.run_dir)
    clip_1 = _pair_clips(run_dir)[0][0]
    stored = np.load(run_dir / "segments" / clip_1.replace(".mp4", ".npy"))
    assert stored.dtype == np.uint8 and stored.shape == (8, 84, 84)
    pending = ckpt.load(run_dir / "checkpoints" / "final.pt", map_location="cpu")["agent_state"]["pending"]
    assert pending["0"]["obs_1"].shape == (8 + 3, 84, 84)  # the segment's distinct frames (StackedSegments)
    np.testing.assert_array_equal(stored, pending["0"]["obs_1"][3:].numpy())  # the newest frame of each stack

    status, body = _fetch_clip(run_dir, clip_1)
    assert status == 200 and body[4:8] == b"ftyp"
    frames = np.stack(list(iio.imiter(run_dir / "clips" / clip_1)))
    assert frames.shape == (8 + 8, 336, 336, 3)  # 8 steps, then the last held for 0.5 s at 15 fps
    expected = stored[0].repeat(4, 0).repeat(4, 1).astype(int)
    assert np.abs(frames[0, :, :, 0].astype(int) - expected).mean() < 6  # lossy, but the same picture


def test_atari_comparisons_keep_distinct_frames_and_the_reward_model_trains_on_them(tmp_path):
    """Synthetic labels on Pong: each comparison keeps K + 3 frames per side instead of K stacks of 4, and the
    ensemble fits on the rebuilt stacks."""
    from rlkit2 import checkpoint as ckpt
    from rlkit2.logger import read_progress

    overrides = {"total_steps": 384, "labels": 8, "initial_labels": 2, "warmup_steps": 128, "pretrain_epochs": 2,
                 "segment_length": 8, "pool_steps": 512, "eval_every": 0, "eval_episodes": 1, "eval_envs": 1,
                 "atari.max_episode_frames": 200, "runs_dir": str(tmp_path), "progress": False, "tensorboard": False,
                 "num_envs": 2, "rl.num_steps": 64, "rl.minibatch_size": 64}
    run, cfg = resolve_config("pref", "ALE/Pong-v5", overrides)
    result = train(run, cfg)
    comparisons = ckpt.load(Path(result.run_dir) / "checkpoints" / "final.pt",
                            map_location="cpu")["agent_state"]["comparisons"]
    assert comparisons["obs_1"].shape == (8, 8 + 3, 84, 84) and comparisons["obs_2"].shape == (8, 8 + 3, 84, 84)
    rows = [r for r in read_progress(result.run_dir) if "pref/train_loss" in r]
    assert rows and np.isfinite(rows[-1]["pref/train_loss"])


def test_a_fixed_reward_model_budget_reaches_every_fit_on_atari(tmp_path, monkeypatch):
    """--reward_batches, --fit_eval_pairs, --normalization_steps and --reward_precision bf16 (the reduced-budget
    Pong benchmark's settings): pretraining makes full passes; each later fit takes the fixed number of
    minibatches and scores the given number of pairs; normalisation refits on that many recent steps. The Atari
    preset's guards reach the model: reset padding filled, rewards clipped at 5 std, winsorised normalisation, and
    the model sees frames only."""
    from rlkit2.preference import EnsembleTrainer, RewardEnsemble

    monkeypatch.setenv("RLKIT2_ALLOW_SLOW_BF16", "1")  # the bf16 path on any machine (rlkit2/device.py:check_bf16)
    fits, norm_rows, models = [], [], []
    real_fit, real_norm = EnsembleTrainer.fit, RewardEnsemble.fit_normalization
    monkeypatch.setattr(EnsembleTrainer, "fit", lambda self, *a, **kw: fits.append(a[6:]) or real_fit(self, *a, **kw))
    monkeypatch.setattr(RewardEnsemble, "fit_normalization",
                        lambda self, obs, act: norm_rows.append(len(obs)) or models.append(self) or real_norm(self, obs, act))
    overrides = {"total_steps": 384, "labels": 8, "initial_labels": 2, "warmup_steps": 128, "pretrain_epochs": 2,
                 "segment_length": 8, "pool_steps": 512, "eval_every": 0, "eval_episodes": 1, "eval_envs": 1,
                 "atari.max_episode_frames": 200, "runs_dir": str(tmp_path), "progress": False, "tensorboard": False,
                 "num_envs": 2, "rl.num_steps": 64, "rl.minibatch_size": 64, "reward_batches": 3, "fit_eval_pairs": 4,
                 "normalization_steps": 64, "reward_precision": "bf16"}
    run, cfg = resolve_config("pref", "ALE/Pong-v5", overrides)
    train(run, cfg)
    assert fits[0] == (2, 0, 4) and len(fits) >= 3 and all(f == (1, 3, 4) for f in fits[1:])
    assert set(norm_rows) == {64} and all(net.bf16 for net in models[0].nets)
    assert models[0].frame_stack and models[0].clip == 5.0 and models[0].trim == 0.005
    assert not models[0].use_actions and models[0].nets[0].head[0].in_features == 16 * 7 * 7  # frames only


ATARI_TINY = {"total_steps": 384, "labels": 8, "initial_labels": 2, "warmup_steps": 128, "pretrain_epochs": 2,
              "segment_length": 8, "pool_steps": 512, "eval_every": 0, "eval_episodes": 1, "eval_envs": 1,
              "atari.max_episode_frames": 200, "progress": False, "tensorboard": False, "num_envs": 2,
              "rl.num_steps": 64, "rl.minibatch_size": 64}


def test_on_atari_the_reward_model_trains_in_train_mode_and_scores_in_eval_mode_also_after_a_resume(tmp_path,
                                                                                                   monkeypatch):
    """Every forward pass of a conv member that builds a graph (a training step) runs in train mode (batch
    statistics, dropout); every one without (the RL agent's rewards, the normalisation, query selection, held-out
    losses) in eval mode; also after a resume, whose model is built afresh and loads the saved batch-norm
    statistics."""
    from rlkit2 import checkpoint as ckpt
    from rlkit2.preference import ConvRewardMember

    calls = []
    real_forward = ConvRewardMember.forward
    monkeypatch.setattr(ConvRewardMember, "forward", lambda self, obs, actions: calls.append(
        (torch.is_grad_enabled(), self.training, self.convs[3].training)) or real_forward(self, obs, actions))
    loaded = []
    from agents.pref import PrefAgent

    real_load = PrefAgent.load_state_dict
    monkeypatch.setattr(PrefAgent, "load_state_dict", lambda self, state: real_load(self, state) or loaded.append(
        (state["reward_model"], {k: v.clone() for k, v in self.model.state_dict().items()})))
    run, cfg = resolve_config("pref", "ALE/Pong-v5", {**ATARI_TINY, "stop_after_steps": 256, "runs_dir": str(tmp_path),
                                                      "checkpoint_every": 128})
    first = train(run, cfg)
    assert first.status == "interrupted"
    session_one = len(calls)
    second = resume(first.run_dir, {"stop_after_steps": 0})
    assert second.status == "finished" and len(calls) > session_one
    training, scoring = [c for c in calls if c[0]], [c for c in calls if not c[0]]
    assert training and scoring
    assert all(c[1] and c[2] for c in training)  # member and its dropout in train mode
    assert not any(c[1] or c[2] for c in scoring)
    assert not any(c[1] for c in calls[session_one:] if not c[0])  # after the resume too
    saved, after_load = loaded[0]
    assert any(k.endswith("running_var") for k in saved)  # the batch-norm statistics are in the checkpoint ...
    for key, value in saved.items():  # ... and the resumed model has them
        torch.testing.assert_close(after_load[key], value.to(after_load[key].dtype), rtol=0, atol=0)
    final = ckpt.load(Path(second.run_dir) / "checkpoints" / "final.pt", map_location="cpu")["agent_state"]
    assert not torch.equal(final["reward_model"]["nets.0.convs.1.running_mean"],
                           saved["nets.0.convs.1.running_mean"])  # and kept training them


def test_a_checkpoint_saved_without_batch_norm_needs_its_options_to_resume_and_still_evaluates():
    """Runs from before the paper's batch norm and dropout saved a reward model without them: resuming with the
    new defaults is a clear error naming the options that rebuild it; evaluation (which only acts) goes on."""
    from agents.pref import PrefAgent, PrefConfig
    from rlkit2.agent import BuildContext
    from rlkit2.config import override

    env = envs.make("ALE/Pong-v5", num_envs=1, seed=0)
    ctx = BuildContext(env=env, device=torch.device("cpu"), total_steps=1000, seed=0, threads_collect=1,
                       threads_update=1)
    small = {"pool_steps": 64, "reward_actions": "false", "rl.num_steps": "64", "rl.minibatch_size": "64"}
    old = PrefAgent(override(PrefConfig(), {**small, "reward_batch_norm": "false", "reward_dropout": "0"}), ctx)
    assert [type(m).__name__ for m in old.model.nets[0].convs][:3] == ["Conv2d", "LeakyReLU", "Dropout"]
    state = old.state_dict()
    new = PrefAgent(override(PrefConfig(), small), ctx)
    assert type(new.model.nets[0].convs[1]).__name__ == "BatchNorm2d" and new.model.nets[0].convs[3].p == 0.5
    with pytest.raises(ConfigError, match="no batch norm.*Resume it with --reward_batch_norm false --reward_dropout 0"):
        new.load_state_dict(state)
    evaluating = PrefAgent(override(PrefConfig(), small), dataclasses.replace(ctx, training=False))
    with pytest.warns(UserWarning, match="evaluated without it"):
        evaluating.load_state_dict(state)
    for mine, saved in zip(evaluating.rl.state_dict()["model"].values(), state["rl"]["model"].values()):
        torch.testing.assert_close(mine, saved)
    PrefAgent(override(PrefConfig(), {**small, "reward_batch_norm": "false", "reward_dropout": "0"}),
              ctx).load_state_dict(state)  # with the options it was saved with
    env.close()


def test_the_atari_preset_has_the_papers_label_schedule_and_mujoco_keeps_its_own():
    """App. A.2: 500 comparisons before RL, 200 pretraining epochs, a rate ~ 5e6 / (T + 5e6) with T in frames,
    lowered every 5e6 frames (1.25e6 agent steps at frame skip 4). App. A.1: 25% up front, 2e6 / (T + 2e6)."""
    atari = resolve_config("pref", "ALE/Pong-v5")[1]
    assert (atari.initial_labels, atari.pretrain_epochs, atari.label_tau, atari.label_rate_every) == (500, 200, 1.25e6,
                                                                                                      1_250_000)
    assert (atari.labels, atari.max_comparisons, atari.reward_batch_norm, atari.reward_dropout) == (5500, 3000, True,
                                                                                                    0.5)
    for env_id in ("Hopper-v5", "HalfCheetah-v5"):
        mujoco = resolve_config("pref", env_id)[1]
        assert (mujoco.initial_labels, mujoco.initial_share, mujoco.label_tau, mujoco.label_rate_every) == (0, 0.25,
                                                                                                            2e6, 0)


def test_the_first_iteration_asks_for_initial_labels_and_the_rest_follow_the_stretched_schedule(monkeypatch):
    from agents.pref import PrefAgent, PrefConfig
    from rlkit2.agent import BuildContext
    from rlkit2.config import override
    from rlkit2.preference import labels_due

    env = envs.make("Pendulum-v1", num_envs=4, seed=0)
    ctx = BuildContext(env=env, device=torch.device("cpu"), total_steps=4096, seed=0, threads_collect=1,
                       threads_update=1)
    cfg = override(PrefConfig(), {"labels": 40, "initial_labels": 7, "warmup_steps": 256, "pretrain_epochs": 1,
                                  "label_tau": 512, "label_rate_every": 1024, "segment_length": 10,
                                  "rl.num_steps": 64, "rl.minibatch_size": 64})
    agent = PrefAgent(cfg, ctx)
    fitted = []
    real_fit = agent._fit
    monkeypatch.setattr(agent, "_fit", lambda *a, **kw: fitted.append(agent.num_labels) or real_fit(*a, **kw))
    for _ in range(3):
        agent.train_iteration()
    assert fitted[0] == 7  # pretraining on the initial labels alone
    assert agent.labels_asked == labels_due(agent.env_steps, 40, 4096, tau=512, initial_labels=7, rate_every=1024)
    assert agent.labels_asked != labels_due(agent.env_steps, 40, 4096, tau=512, initial_labels=7)  # stretches count
    env.close()
