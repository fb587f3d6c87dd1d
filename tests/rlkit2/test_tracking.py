"""What a run tells trackers: TensorBoard's HParams tab (every run's options beside its final evaluation, read back
through TensorBoard's own HParams backend and event files) and --track wandb (offline: no network; read back from
wandb's run files)."""

import csv
import hashlib
import json
import sys
import time
from pathlib import Path

import pytest
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from tensorboard.plugins.hparams import metadata as hparams_metadata

from rlkit2.cli import main_train
from rlkit2.logger import hparams_of
from rlkit2.run import resolve_config, resume, train

TINY = {"num_envs": 2, "eval_every": 0, "eval_episodes": 2, "eval_envs": 1, "progress": False, "total_steps": 128}
TINY_PPO = {**TINY, "num_steps": 32, "minibatch_size": 32}


def test_hparams_are_the_options_by_their_command_line_names():
    record = {"agent": "ppo", "run": {"env": "Hopper-v5", "seed": 3, "max_episode_steps": None, "progress": False,
                                      "atari": {"frame_skip": 4}, "env_kwargs": {}},
              "agent_config": {"lr": 3e-4, "policy_hidden": [64, 64]}, "env_settings": {"x": 1},
              "source": {"commit": "abc1234", "torch": "2.13"}}
    assert hparams_of(record) == {"agent": "ppo", "env": "Hopper-v5", "seed": 3, "progress": "false",
                                  "atari.frame_skip": 4, "lr": 3e-4, "policy_hidden": "64,64", "commit": "abc1234"}


def hparams_app(logdir: Path, route: str, request: dict) -> dict:
    """TensorBoard's HParams backend on ``logdir``, as `tensorboard --logdir` serves it to the HParams tab."""
    from tensorboard.backend.event_processing import data_provider, plugin_event_multiplexer
    from tensorboard.plugins import base_plugin
    from tensorboard.plugins.hparams import hparams_plugin
    from werkzeug.test import Client
    from werkzeug.wrappers import Response

    multiplexer = plugin_event_multiplexer.EventMultiplexer()
    multiplexer.AddRunsFromDirectory(str(logdir))
    multiplexer.Reload()
    context = base_plugin.TBContext(logdir=str(logdir), multiplexer=multiplexer,
                                    data_provider=data_provider.MultiplexerDataProvider(multiplexer, str(logdir)))
    app = hparams_plugin.HParamsPlugin(context).get_plugin_apps()[route]
    response = Client(app, Response).post(route, data=json.dumps({"experimentName": "", **request}),
                                          content_type="application/json")
    assert response.status_code == 200, response.get_data()
    return json.loads(response.get_data())


def test_the_hparams_tab_shows_every_runs_options_beside_its_final_evaluation(tmp_path):
    ppo = train(*resolve_config("ppo", "CartPole-v1", {**TINY_PPO, "runs_dir": str(tmp_path), "run_name": "ppo",
                                                       "seed": 3, "lr": 2.5e-4}))
    a2c = train(*resolve_config("a2c", "CartPole-v1", {**TINY, "runs_dir": str(tmp_path), "run_name": "a2c",
                                                       "lr": 1e-3}))
    experiment = hparams_app(tmp_path, "/experiment", {})
    names = {h["name"] for h in experiment["hparamInfos"]}
    assert {"agent", "seed", "lr", "total_steps", "clip_eps"} <= names  # clip_eps: PPO's own, shown beside A2C
    assert {m["name"]["tag"] for m in experiment["metricInfos"]} == {
        "final/return_mean", "final/return_std", "final/length_mean", "final/episodes"}
    groups = hparams_app(tmp_path, "/session_groups", {
        "allowedStatuses": ["STATUS_UNKNOWN", "STATUS_SUCCESS"], "colParams": [], "startIndex": 0,
        "sliceSize": 10})["sessionGroups"]
    by_name = {g["name"]: g for g in groups}
    assert set(by_name) == {"ppo/tb/hparams", "a2c/tb/hparams"}
    for name, result, seed, lr in (("ppo/tb/hparams", ppo, 3, 2.5e-4), ("a2c/tb/hparams", a2c, 0, 1e-3)):
        group = by_name[name]
        assert group["hparams"]["agent"] == name.split("/")[0]
        assert group["hparams"]["seed"] == seed and group["hparams"]["lr"] == pytest.approx(lr)
        values = {m["name"]["tag"]: (m["value"], m["trainingStep"]) for m in group["metricValues"]}
        assert values["final/return_mean"] == (pytest.approx(result.final_eval["return_mean"]), result.env_steps)
        assert values["final/episodes"][0] == 2


def session_start(hparams_dir: Path):
    files = list(hparams_dir.glob("events.out.tfevents.*"))
    assert len(files) == 1  # one session per run, rewritten at each end
    accumulator = EventAccumulator(str(hparams_dir))
    accumulator.Reload()
    content = accumulator.PluginTagToContent(hparams_metadata.PLUGIN_NAME)
    assert hparams_metadata.EXPERIMENT_TAG not in content  # TensorBoard unites the sessions' options itself
    info = hparams_metadata.parse_session_start_info_plugin_data(content[hparams_metadata.SESSION_START_INFO_TAG])
    scalar = accumulator.Scalars("final/return_mean")
    return info.hparams, scalar


def test_a_resumed_run_ends_with_its_new_options_and_final_evaluation(tmp_path):
    first = train(*resolve_config("ppo", "CartPole-v1", {**TINY_PPO, "runs_dir": str(tmp_path), "run_name": "r"}))
    hparams, scalar = session_start(tmp_path / "r" / "tb" / "hparams")
    assert hparams["total_steps"].number_value == 128 and hparams["agent"].string_value == "ppo"
    assert hparams["normalize_obs"].string_value in ("true", "false")
    assert [(s.step, s.value) for s in scalar] == [(128, pytest.approx(first.final_eval["return_mean"]))]
    second = resume(tmp_path / "r", {"total_steps": 192})
    hparams, scalar = session_start(tmp_path / "r" / "tb" / "hparams")
    assert hparams["total_steps"].number_value == 192
    assert [(s.step, s.value) for s in scalar] == [(192, pytest.approx(second.final_eval["return_mean"]))]


def test_no_hparams_without_tensorboard_or_before_the_end(tmp_path):
    train(*resolve_config("ppo", "CartPole-v1", {**TINY_PPO, "runs_dir": str(tmp_path), "run_name": "off",
                                                 "tensorboard": False}))
    train(*resolve_config("ppo", "CartPole-v1", {**TINY_PPO, "runs_dir": str(tmp_path), "run_name": "stopped",
                                                 "stop_after_steps": 64}))
    assert not (tmp_path / "off" / "tb").exists()
    assert (tmp_path / "stopped" / "tb").is_dir() and not (tmp_path / "stopped" / "tb" / "hparams").exists()


def test_eval_video_records_the_evaluated_episode_at_every_evaluation(tmp_path):
    import imageio.v2 as imageio

    train(*resolve_config("ppo", "CartPole-v1", {**TINY_PPO, "runs_dir": str(tmp_path), "run_name": "r",
                                                 "eval_every": 64, "eval_episodes": 1, "eval_video": True}))
    assert sorted(p.name for p in (tmp_path / "r" / "videos").iterdir()) == ["step_128.mp4", "step_64.mp4"]
    evaluations = [row for row in progress_rows(tmp_path / "r") if "eval/length_mean" in row]
    assert [row["step"] for row in evaluations] == [64, 128]
    for row in evaluations:  # the same episode: same policy, same seed; its first frame is the reset
        frames = imageio.mimread(tmp_path / "r" / "videos" / f"step_{int(row['step'])}.mp4", memtest=False)
        assert len(frames) == row["eval/length_mean"] + 1


def test_eval_video_of_an_env_that_cannot_render_fails_before_training(tmp_path, capsys):
    code = main_train(CLI_TINY_PPO[4:] + ["--agent", "ppo", "--env", "toy_envs:FixedHorizonEnv", "--runs_dir",
                                          str(tmp_path), "--run_name", "r", "--eval_video", "true"])
    lines = [line for line in capsys.readouterr().err.splitlines() if line.strip() and "warn" not in line.lower()]
    assert code == 2 and len(lines) == 1 and lines[0].startswith(
        "error: --eval_video: cannot record 'toy_envs:FixedHorizonEnv': "), lines
    assert not (tmp_path / "r").exists()


# ------------------------------------------------------------------------------------------------- wandb
@pytest.fixture
def wandb_offline(tmp_path, monkeypatch):
    """wandb in offline mode with every file it writes under tmp_path. Anything that still tried the network would
    meet a closed port on 127.0.0.1 (the server URL and the proxies point there), never the internet."""
    wandb = pytest.importorskip("wandb")
    wandb.teardown()  # wandb reads its environment once per process: let it read this test's
    for name, value in {"WANDB_MODE": "offline", "WANDB_DIR": tmp_path / "wandb_dir",
                        "WANDB_CONFIG_DIR": tmp_path / "wandb_config", "WANDB_CACHE_DIR": tmp_path / "wandb_cache",
                        "WANDB_DATA_DIR": tmp_path / "wandb_data", "WANDB_ERROR_REPORTING": "false",
                        "WANDB_SILENT": "true", "WANDB_BASE_URL": "http://127.0.0.1:9",
                        "HTTP_PROXY": "http://127.0.0.1:9", "HTTPS_PROXY": "http://127.0.0.1:9",
                        "NO_PROXY": "127.0.0.1,localhost"}.items():
        monkeypatch.setenv(name, str(value))
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    (tmp_path / "wandb_dir").mkdir()
    yield tmp_path / "wandb_dir"
    wandb.teardown()


def wandb_records(path: Path):
    """The records of an offline run's .wandb file (wandb's append-only log: a 7-byte header, then LevelDB-style
    32 KiB blocks of chunks with a 7-byte header: CRC, length, type 1 full / 2 first / 3 middle / 4 last)."""
    from wandb.proto import wandb_internal_pb2

    data, pos, pending = path.read_bytes(), 7, b""
    assert data[:4] == b":W&B"
    while pos + 7 <= len(data):
        if 32768 - pos % 32768 < 7:  # a block's tail too short for a header is padding
            pos += 32768 - pos % 32768
            continue
        length, kind = int.from_bytes(data[pos + 4:pos + 6], "little"), data[pos + 6]
        pending += data[pos + 7:pos + 7 + length]
        pos += 7 + length
        if kind in (1, 4):
            record = wandb_internal_pb2.Record()
            record.ParseFromString(pending)
            pending = b""
            yield record


def read_offline_run(run_file: Path) -> dict:
    """The run record, the history rows, the config and the summary an offline run file holds."""

    def items(updates) -> dict:  # a key with '/' comes as its parts (nested_key)
        return {item.key or "/".join(item.nested_key): json.loads(item.value_json) for item in updates}

    out = {"history": [], "config": {}, "summary": {}, "run": None}
    for record in wandb_records(run_file):
        kind = record.WhichOneof("record_type")
        if kind == "run":
            run = record.run
            out["run"] = {"id": run.run_id, "project": run.project, "group": run.run_group, "name": run.display_name}
        elif kind == "history":
            out["history"].append(items(record.history.item))
        elif kind in ("config", "summary"):
            out[kind].update(items(getattr(record, kind).update))
    return out


def offline_sessions(directory: Path, run_id: str) -> list[dict]:
    """The offline sessions of wandb run ``run_id`` under ``directory``, oldest first. wandb's service writes them
    out when it stops (teardown; at exit in a script): ``finish()`` returns before that."""
    import wandb

    wandb.teardown()
    return [read_offline_run(path) for path in sorted(directory.glob(f"wandb/offline-run-*-{run_id}/run-{run_id}.wandb"))]


def progress_rows(run_dir: Path) -> list[dict[str, float]]:
    with open(run_dir / "progress.csv", newline="") as f:
        return [{k: float(v) for k, v in row.items() if v} for row in csv.DictReader(f)]


CLI_TINY_PPO = ["--agent", "ppo", "--env", "CartPole-v1", "--num_envs", "2", "--num_steps", "32", "--minibatch_size",
                "32", "--eval_every", "64", "--eval_episodes", "1", "--eval_envs", "1", "--progress", "false",
                "--total_steps", "128"]


def test_track_wandb_logs_the_same_metrics_the_config_the_final_evaluation_and_videos(tmp_path, wandb_offline, capsys):
    run_dir = tmp_path / "runs" / "r"
    code = main_train(CLI_TINY_PPO + ["--runs_dir", str(tmp_path / "runs"), "--run_name", "r", "--track", "wandb",
                                      "--wandb_project", "proj", "--wandb_group", "grp", "--eval_video", "true"])
    assert code == 0, capsys.readouterr().err
    run_id = (run_dir / "wandb_id").read_text().strip()
    [logged] = offline_sessions(wandb_offline, run_id)
    assert logged["run"] == {"id": run_id, "project": "proj", "group": "grp", "name": "r"}
    assert logged["config"]["agent"] == "ppo" and logged["config"]["run"]["total_steps"] == 128
    assert logged["config"]["agent_config"]["minibatch_size"] == 32
    history = [{k: v for k, v in row.items() if not k.startswith("_")} for row in logged["history"]]
    videos = [row for row in history if "eval/video/_type" in row]
    # every progress.csv row (what TensorBoard got), against the env step
    assert [row for row in history if row not in videos] == [
        {"global_step": int(row.pop("step")), **row} for row in progress_rows(run_dir)]
    # each evaluation's video, the file the run wrote
    assert [(v["global_step"], v["eval/video/_type"]) for v in videos] == [(64, "video-file"), (128, "video-file")]
    for video in videos:
        recorded = (run_dir / "videos" / f"step_{video['global_step']}.mp4").read_bytes()
        assert video["eval/video/sha256"] == hashlib.sha256(recorded).hexdigest()
    final = json.loads((run_dir / "config.json").read_text())  # written; the final evaluation is the last eval row
    assert final["run"]["track"] == "wandb"
    assert logged["summary"]["final/return_mean"] == progress_rows(run_dir)[-1]["eval/return_mean"]


def test_a_resumed_run_continues_its_wandb_run(tmp_path, wandb_offline, monkeypatch, capsys):
    monkeypatch.delenv("WANDB_DIR")  # by default wandb's files stay in the run directory
    run_dir = tmp_path / "runs" / "r"
    args = CLI_TINY_PPO + ["--runs_dir", str(tmp_path / "runs"), "--run_name", "r", "--track", "wandb"]
    assert main_train(args + ["--stop_after_steps", "64"]) == 0, capsys.readouterr().err
    run_id = (run_dir / "wandb_id").read_text().strip()
    time.sleep(1.1)  # wandb names a session's offline folder by the second it starts in
    assert main_train(["--resume", str(run_dir), "--stop_after_steps", "0"]) == 0, capsys.readouterr().err
    assert (run_dir / "wandb_id").read_text().strip() == run_id
    sessions = offline_sessions(run_dir, run_id)
    assert len(sessions) == 2  # one offline record per session, both of the same wandb run (`wandb sync` joins them)
    first, second = sessions
    assert first["run"]["id"] == second["run"]["id"] == run_id
    assert [row["global_step"] for row in first["history"]] == [64]  # one iteration: 2 envs x 32 steps
    assert [row["global_step"] for row in second["history"]] == [128]
    assert second["summary"]["final/return_mean"] == progress_rows(run_dir)[-1]["eval/return_mean"]
    assert not list(wandb_offline.iterdir())  # nothing outside the run directory


def test_track_wandb_without_wandb_gives_the_pip_command(tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "wandb", None)  # import wandb raises ImportError
    code = main_train(CLI_TINY_PPO + ["--runs_dir", str(tmp_path), "--run_name", "r", "--track", "wandb"])
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.strip()]
    assert code == 2 and len(lines) == 1, err
    assert lines[0] == ("error: --track wandb needs wandb, which is not installed (the 'wandb' extra) — "
                        "pip install 'rlkit2[wandb]' (from a checkout: pip install -e '.[wandb]')")
    assert not (tmp_path / "r").exists()  # a failed start leaves no run directory
