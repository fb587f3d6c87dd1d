"""report.py: the preference target table (learned-reward return as a share of the true-reward return) from
records, and a report block written into a markdown file between its markers."""

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def _record(env: str, variant: str, seed: int, final: float) -> dict:
    return {"env": env, "variant": variant, "seed": seed, "final": final, "steps": 1000, "seconds": 60.0,
            "curve": [[500, final / 2], [1000, final]]}


def test_pref_target_block_gives_the_ratio_of_means_and_per_seed_ratios(tmp_path):
    records = [_record("A-v5", "1400 labels, entropy_coef=0.01", 0, 80.0),
               _record("A-v5", "1400 labels, entropy_coef=0.01", 1, 100.0),
               _record("A-v5", "true reward, entropy_coef=0.01", 0, 100.0),
               _record("A-v5", "true reward, entropy_coef=0.01", 1, 100.0),
               _record("B-v5", "1400 labels, absorbing", 0, 50.0),
               _record("B-v5", "700 labels, absorbing", 0, 99.0),  # another label count: not in the ratio
               _record("B-v5", "true reward", 0, 100.0)]
    data = tmp_path / "pref.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in records))
    doc = tmp_path / "doc.md"
    doc.write_text("before\n<!-- report:pref_mujoco_entropy -->\nold\n<!-- /report -->\nafter\n")
    done = subprocess.run([sys.executable, str(ROOT / "scripts" / "bench" / "report.py"), "--pref-mujoco-entropy",
                           str(data), "--write-into", str(doc)], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    text = doc.read_text()
    assert text.startswith("before\n<!-- report:pref_mujoco_entropy -->\n| task |") and "old" not in text
    assert text.endswith("<!-- /report -->\nafter\n")
    assert "| A-v5 | 90 ± 10 | 100 ± 0 | **90%, met** | s0: 80%, s1: 100% |" in text
    assert "| B-v5 | 50 ± 0 | 100 ± 0 | **50%, not met** | s0: 50% |" in text
    assert "| A-v5 | 1400 labels, entropy_coef=0.01 | 1,000 | 2 | 90 ± 10 |" in text  # the curves table follows


def test_pref_target_refuses_a_file_that_mixes_variants_of_one_kind(tmp_path):
    data = tmp_path / "mixed.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in [
        _record("A-v5", "1400 labels", 0, 80.0), _record("A-v5", "1400 labels, entropy_coef=0.01", 0, 90.0),
        _record("A-v5", "true reward", 0, 100.0)]))
    done = subprocess.run([sys.executable, str(ROOT / "scripts" / "bench" / "report.py"), "--pref-mujoco-entropy",
                           str(data)], capture_output=True, text=True, timeout=120)
    assert done.returncode != 0 and "mixes" in done.stderr and "split the records" in done.stderr


def test_pref_reward_cost_times_a_fit_and_scoring_per_comparison():
    sys.path.insert(0, str(ROOT / "scripts" / "bench"))
    from pref_reward_cost import measure

    for precision in ("fp32", "bf16"):
        result = measure(pairs=8, segment=3, precision=precision)
        # times only (their order is for the benchmark: under load a tiny fit can beat a tiny scoring pass)
        assert min(result["fit_ms_per_comparison"], result["score_ms_per_segment"], result["reward_ms_per_step"]) > 0
        assert result["minibatch_ms"] > 0 and result["minibatch"] == 8 and result["precision"] == precision
        assert (result["pairs"], result["segment"], result["members"], result["threads"]) == (8, 3, 3, 1)


def test_pref_atari_block_gives_each_variants_mean_return_at_each_evaluation(tmp_path):
    """Runs are named by variant and commit: one command run again on fixed code is a separate row."""
    records = [_record("P-v5", "1400 labels", 0, -10.0), _record("P-v5", "1400 labels", 1, -20.0),
               _record("P-v5", "true reward", 0, 4.0), _record("P-v5", "1400 labels", 0, 6.0)]
    for r, commit in zip(records, ["abc", "abc", "abc", "def"]):
        r["commit"] = commit
    data = tmp_path / "atari.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in records))
    done = subprocess.run([sys.executable, str(ROOT / "scripts" / "bench" / "report.py"), "--pref-atari", str(data)],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert "P-v5, 1400 labels @ abc, 2 seed(s):" in done.stdout and "| env steps | 500 | 1,000 |" in done.stdout
    assert "| eval return | -7.5 | -15.0 |" in done.stdout  # means over seeds of -5/-10 and -10/-20
    assert "| eval return | 2.0 | 4.0 |" in done.stdout
    assert "P-v5, 1400 labels @ def, 1 seed(s):" in done.stdout and "| eval return | 3.0 | 6.0 |" in done.stdout
    assert "| P-v5 | 1400 labels @ def | 1,000 | 1 | 6 ± 0 |" in done.stdout


def test_pref_events_block_shows_the_learned_reward_around_lost_points(tmp_path):
    record = {"run": "pref-Pong-s0", "zero_padding": True, "window": 2, "std": 80.5, "std_without_top_0.1%": 1.04,
              "max_abs": 1331.9, "max_abs_episode_step": 1,
              "negative": {"events": 7, "mean": [0.5, -1.0, -0.9, 42.3, 1.0]},
              "positive": {"events": 0, "mean": []}}
    data = tmp_path / "events.jsonl"
    data.write_text(json.dumps(record) + "\n")
    done = subprocess.run([sys.executable, str(ROOT / "scripts" / "bench" / "report.py"), "--pref-events", str(data)],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    # offsets beyond the record's window stay empty; -2..+2 line up with the means
    assert ("| pref-Pong-s0 | zeros | 80.50 | 1.04 | 1332 (1) |  |  |  |  | +0.50 | -1.00 | -0.90 | +42.30 | +1.00 "
            "|  | 7 |") in done.stdout


def test_paired_variants_block_gives_iqm_and_per_seed_differences(tmp_path):
    records = [{**_record("A-v5", "study preset", s, f), "action_std_final": 0.1} for s, f in ((0, 10.0), (1, 30.0))]
    records += [{**_record("A-v5", "tanh squashing", s, f), "action_std_final": 0.3} for s, f in ((0, 14.0), (1, 20.0))]
    data = tmp_path / "ablation.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in records))
    done = subprocess.run([sys.executable, str(ROOT / "scripts" / "bench" / "report.py"), "--ablation-squash",
                           str(data)], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert "| A-v5 | study preset | 1,000 | 2 | 20 ± 10 | 20 [10, 30] | s0: 10, s1: 30 | – | 0.100 |" in done.stdout
    assert "| A-v5 | tanh squashing | 1,000 | 2 | 17 ± 3 | 17 [14, 20] | s0: 14, s1: 20 | s0: +4, s1: -10 | 0.300 |" \
        in done.stdout


def _trial(env, config, seed, final, status="finished", agent="ppo", **extra):
    curve = [[500, final / 2], [1000, final]] if final is not None else [[500, 1.0]]
    return {"key": f"{agent}-{env}-{config}-s{seed}", "agent": agent, "env": env, "config": config, "variant": config,
            "seed": seed, "status": status, "steps": 1000 if final is not None else 500, "final": final,
            "best": max(v for _, v in curve), "wall_time_s": 120.0, "steps_per_sec": 1000.0 + seed,
            "error": extra.pop("error", None), "commit": "abc1234", "curve": curve,
            "curves": {"eval/return_mean": curve, "eval/success_rate": extra.pop("success", [])},
            "last": extra.pop("last", {}), "overrides": {"total_steps": 1000, "seed": seed}}


def test_a_sweeps_results_render_with_the_specs_report_options(tmp_path):
    trials = [_trial("A-v5", "true reward", 0, 100.0, last={"pref/reward_correlation": 0.5}),
              _trial("A-v5", "true reward", 1, 200.0),
              _trial("A-v5", "1400 labels", 0, 90.0, agent="pref", last={"pref/reward_correlation": 0.8},
                     success=[[500, 0.2], [1000, 0.6]]),
              _trial("A-v5", "1400 labels", 1, 150.0, agent="pref", last={"pref/reward_correlation": 0.6},
                     success=[[500, 0.7], [1000, 0.9]]),
              _trial("A-v5", "700 labels", 0, None, status="failed", agent="pref", error="ValueError: boom")]
    results = tmp_path / "results.json"
    results.write_text(json.dumps({"sweep": "pm", "metric": "eval/return_mean", "trials": trials, "report": {
        "baseline": "true reward", "columns": ["pref/reward_correlation"],
        "first_reaching": {"metric": "eval/success_rate", "threshold": 0.5},
        "ratio": {"variant": "1400 labels", "target": 0.8}, "steps_table": True}}))
    doc = tmp_path / "doc.md"
    doc.write_text("<!-- report:pm -->\n<!-- /report -->\n")
    done = subprocess.run([sys.executable, str(ROOT / "scripts" / "bench" / "report.py"), "--sweep", f"pm={results}",
                           "--write-into", str(doc)], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    text = doc.read_text()
    assert "Sweep `pm`, metric `eval/return_mean`, 5 trials; code: abc1234" in text
    # baseline: its own row shows no difference; the others per seed; correlation column is the mean of the last values
    assert ("| A-v5 | true reward | 1,000 | 2/2 | 150 ± 50 | 150 [100, 200] | s0: 100, s1: 200 | – | 0.5 | "
            "– | 150 | 2.0 min | 1,000 |") in text
    assert "| A-v5 | 1400 labels | 1,000 | 2/2 | 120 ± 30 | 120 [90, 150] | s0: 90, s1: 150 | s0: -10, s1: -50 | 0.7 | " \
           "1000, 500 | 120 |" in text
    assert "| A-v5 | 700 labels | 1,000 | 0/1 | – | – | s0: failed (ValueError: boom) |" in text  # never dropped
    assert "| A-v5 | 120 ± 30 | 150 ± 50 | **80%, met** | s0: 90%, s1: 75% |" in text  # ratio of means, per seed
    assert "A-v5, true reward, 2 seed(s):" in text and "| eval return | 75.0 | 150.0 |" in text
    bad = subprocess.run([sys.executable, str(ROOT / "scripts" / "bench" / "report.py"), "--sweep",
                          f"pm={tmp_path / 'nothing'}"], capture_output=True, text=True, timeout=120)
    assert bad.returncode != 0 and "no sweep results" in bad.stderr and "Traceback" not in bad.stderr


def test_a_sweep_renders_beside_published_peer_results(tmp_path):
    trials = [_trial("A-v5", "default", seed, final) for seed, final in ((0, 100.0), (1, 300.0))]
    trials += [_trial("B-v5", "default", 0, 50.0)]
    results = tmp_path / "results.json"
    results.write_text(json.dumps({"sweep": "pm", "metric": "eval/return_mean", "trials": trials, "report": {
        "published": {"Lib1": {"A-v5": [150.0, 10.0], "B-v5": [60.0, 1.0]}, "Lib2": {"A-v5": [250.0, 5.0]}}}}))
    done = subprocess.run([sys.executable, str(ROOT / "scripts" / "bench" / "report.py"), "--sweep", f"pm={results}"],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    # curves: 500 -> 50, 150 (mean 100); 1000 -> 100, 300 (mean 200): the max over evaluations of the mean is 200
    assert "| A-v5 | 200 ± 100 (2) | 200 | 150 ± 10 | 250 ± 5 | 80% of 250: **not reached** |" in done.stdout
    assert "| B-v5 | 50 ± 0 (1) | 50 | 60 ± 1 | not published | 83% of 60: **not reached** |" in done.stdout


def test_remote_workers_block_lists_costs_rates_ratios_and_every_repeat(tmp_path):
    runs = {"E": {"0": [{"steps_per_sec": 100.0, "shares": {"share_update": 0.7}},
                        {"steps_per_sec": 110.0, "shares": {"share_update": 0.6}}],
                  "2": [{"steps_per_sec": 150.0, "shares": {"share_update": 0.5}},
                        {"steps_per_sec": 160.0, "shares": {"share_update": 0.5}}]}}
    data = {"command": "python scripts/bench/remote_workers.py", "commit": "abc", "ray": "2.60.0",
            "machine": {"cpus": 2, "platform": "Linux"}, "settings": {"steps": 4096, "num_envs": 8, "num_steps": 256},
            "transfer": {"rollout_shape": [256, 4], "rollout_mb": 0.1, "weights": 1000, "weights_mb": 0.01,
                         "workers": 2, "empty_call_ms": [1.0, 2.0], "rollout_ms": [0.5, 0.7], "broadcast_ms": [3.0],
                         "median": {"empty_call_ms": 1.5, "rollout_ms": 0.6, "broadcast_ms": 3.0}},
            "runs": runs, "median_steps_per_sec": {"E": {"0": 105.0, "2": 155.0}},
            "amdahl": {"E": {"update_share_w0": 0.65, "bound_without_overhead": {"2": 1.21}}}}
    path = tmp_path / "rw.json"
    path.write_text(json.dumps(data))
    done = subprocess.run([sys.executable, str(ROOT / "scripts" / "bench" / "report.py"), "--remote-workers", str(path)],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert "| an empty actor call (round trip) | 1.50 ms | 1.0, 2.0 |" in done.stdout
    assert "| E | 0 | 105 | 1.00x | 100, 110 | update 65% |" in done.stdout
    assert "| E | 2 | 155 | 1.48x | 150, 160 | update 50% |" in done.stdout
    assert "E: update share without workers 65%; Amdahl's bound W = 2: 1.21x." in done.stdout
