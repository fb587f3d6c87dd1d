#!/usr/bin/env python
"""Render benchmark outputs as markdown tables, never typed by hand.

    python scripts/bench/report.py --throughput docs/bench/throughput.json --learning docs/bench/learning.jsonl \
        --ablation docs/bench/ablation.jsonl [--write-into docs/benchmarks.md]
    python scripts/bench/report.py --sweep ppo_mujoco=docs/bench/sweeps/ppo_mujoco.json --write-into docs/benchmarks.md

A learning benchmark is a sweep spec (benchmarks/*.toml) run by scripts/sweep.py; its results.json, copied to
docs/bench/sweeps/, renders with --sweep BLOCK=PATH (the spec's [report] table says what the table shows). The
records of the benchmark scripts that sweeps replaced (docs/bench/*.jsonl) still render with their own options.

With --write-into, each table replaces the block between `<!-- report:NAME -->` and `<!-- /report -->` in that
file (NAME: throughput, atari_speed, atari_pong, learning, ablation, ablation_squash, learning_long, dsac_speed, dsac_learning, agac_exploration,
vpn_collect, vpn_planning, collect_env, pref_mujoco_target and pref_mujoco, pref_mujoco_entropy, pref_atari, pref_events).
"""

from __future__ import annotations

import argparse
import json
from collections import defaultdict
from pathlib import Path

import numpy as np

from benchlib import median_row, record_name


def throughput(path: Path) -> None:
    data = json.loads(path.read_text())
    print(f"Machine: {data['machine']}  \nCommand: `{data['command']}`\n")
    print("| env | backend | raw steps/s (8 envs, random actions) |\n|---|---|---|")
    for key, rate in data["raw"].items():
        env, backend = key.rsplit(" ", 1)
        print(f"| {env} | {backend} | {rate:,.0f} |")
    median = data["median_steps_per_sec"]
    best_sb3 = max(v for k, v in median.items() if k.startswith("sb3"))
    best_tianshou = max((v for k, v in median.items() if k.startswith("tianshou")), default=None)
    print("\n| PPO on HalfCheetah-v5 x 8, identical hyperparameters | steps/s (median) | vs best SB3 | vs best Tianshou | "
          "collection steps/s | collection vs raw env (whole collection loop) | runs | first iteration, repeat 1 (s) |\n"
          "|---|---|---|---|---|---|---|---|")
    for name, runs in data["ppo"].items():
        med = float(np.median([r["steps_per_sec"] for r in runs]))
        col = float(np.median([r["collect_steps_per_sec"] for r in runs]))
        raw_key = "HalfCheetah-v5 envpool" if "envpool" in name else "HalfCheetah-v5 sync"
        raw = data["raw"].get(raw_key)
        shares = ""
        if "share_update" in runs[0]:
            shares = (f" (env {np.median([r['share_env'] for r in runs]):.0%}, inference "
                      f"{np.median([r['share_inference'] for r in runs]):.0%}, update "
                      f"{np.median([r['share_update'] for r in runs]):.0%})")
        each = ", ".join(f"{r['steps_per_sec']:.0f}" for r in runs)
        first = runs[0].get("first_iteration_seconds")  # warm-up, and with compile_loss the compile
        vs_raw = f"{(col / raw if raw else float('nan')):.0%} of {raw_key.split()[-1]}"
        if raw and "collect_wall_steps_per_sec" in runs[0]:  # env + inference + the loop's own bookkeeping
            vs_raw += f" ({np.median([r['collect_wall_steps_per_sec'] for r in runs]) / raw:.0%})"
        vs_tianshou = f"{med / best_tianshou:.2f}x" if best_tianshou else ""
        print(f"| {name}{shares} | {med:,.0f} | {med / best_sb3:.2f}x | {vs_tianshou} | {col:,.0f} | {vs_raw} | "
              f"{each} | {'' if first is None else f'{first:.1f}'} |")
    for name, out in data.get("atari_ppo", {}).items():
        print(f"\nAtari PPO (Pong, Nature-CNN, CPU) {name}: {out['steps_per_sec']:.0f} agent steps/s = "
              f"{out['frames_per_sec']:.0f} frames/s, update share {out['share_update']:.0%}")


def atari_speed(path: Path) -> None:
    data = json.loads(path.read_text())
    print(f"Machine: {data['machine']}  \nCommand: `{data['command']}`\n")
    if "median" not in data:  # a record from before the peer and the FLOP/s columns
        _atari_speed_precisions(data)
        return
    print("| Atari PPO, Pong x 8 (Nature-CNN) | agent steps/s (median) | vs SB3, same threads | update share | update "
          "GFLOP/s | of the CNN shapes' rate | of dense GEMM | runs (steps/s) |\n|---|---|---|---|---|---|---|---|")
    median, peaks = data["median"], data["median_peak"]
    for name, runs in data["runs"].items():
        threads = int(name.split("threads_update=" if name.startswith("rlkit2") else "threads=")[1].split(",")[0])
        peak, m = peaks[f"threads={threads}"], median[name]
        sb3 = median.get(f"sb3 threads={threads}")
        vs = f"{m['steps_per_sec'] / sb3['steps_per_sec']:.2f}x" if sb3 and not name.startswith("sb3") else ""
        share = np.median([r.get("share_update", 1 - r.get("share_collect", 1)) for r in runs])
        per_run = ", ".join(f"{r['steps_per_sec']:.0f}" for r in runs)
        print(f"| {name} | {m['steps_per_sec']:,.0f} | {vs} | {share:.0%} | {m['update_gflops_per_sec']:.1f} | "
              f"{m['update_gflops_per_sec'] / peak['gflops_per_sec']:.0%} | "
              f"{m['update_gflops_per_sec'] / peak['gemm_gflops_per_sec']:.0%} | "
              f"{per_run} |")
    print("\n| ceiling (same run) | Nature-CNN layer shapes, fwd+bwd at 256 (GFLOP/s) | dense 1024² GEMM (GFLOP/s) | "
          "runs (shapes) |\n|---|---|---|---|")
    for name, runs in data["peak"].items():
        per_run = ", ".join(f"{r['gflops_per_sec']:.1f}" for r in runs)
        print(f"| {name} | {peaks[name]['gflops_per_sec']:.1f} | {peaks[name]['gemm_gflops_per_sec']:.1f} | "
              f"{per_run} |")


def _atari_speed_precisions(data: dict) -> None:
    print("| PPO on ALE/Pong-v5 x 8 (Nature-CNN) | agent steps/s (median) | frames/s | update share | vs fp32, "
          "1 thread | runs |\n|---|---|---|---|---|---|")
    median = data["median_steps_per_sec"]
    base = median.get("threads_update=1, cnn_precision=fp32")
    for name, runs in data["runs"].items():
        share = np.median([r["share_update"] for r in runs])
        ratio = f"{median[name] / base:.2f}x" if base else ""
        per_run = ", ".join(f"{r['steps_per_sec']:.0f}" for r in runs)
        print(f"| {name} | {median[name]:,.0f} | {4 * median[name]:,.0f} | {share:.0%} | {ratio} | {per_run} |")


def dsac_speed(path: Path) -> None:
    """One row per thread count and rlkit2 update (eager; compiled where the record has it): medians over the
    record's repeats, every run's steps/s listed where there were several."""
    data = json.loads(path.read_text())
    print(f"Machine: {data['machine']}, torch {data['torch']}; {data['env']}, {data['steps']} timed env steps after a "
          f"{data['warmup']}-step warm-up, one update per env step\n")
    print("| torch threads | rlkit2 DSAC-T steps/s (= updates/s) | SB3 SAC steps/s (= updates/s) | ratio | "
          "Tianshou SAC steps/s | ratio | rlkit2 update: GFLOP/s vs dense matmuls at its shapes |\n"
          "|---|---|---|---|---|---|---|")
    for threads in sorted({r["threads"] for r in data["rows"]}):
        runs = defaultdict(list)
        for row in data["rows"]:
            if row["threads"] == threads:
                runs[row["lib"]].append(row)
        sb3, tianshou = median_row(runs["sb3"]), median_row(runs["tianshou"]) if runs["tianshou"] else None
        for lib, label in (("rlkit2", f"{threads}"), ("rlkit2-compiled", f"{threads}, update compiled")):
            if not runs[lib]:
                continue
            mine = median_row(runs[lib])
            flops = (f"{mine['update_gflop_per_sec']:.1f} of {mine['matmul_gflop_per_sec']:.1f} = "
                     f"{mine['update_share_of_matmul_rate']:.0%} ({mine['gflop_per_update']:.3f} GFLOP per update)"
                     if "update_gflop_per_sec" in mine else "not measured")  # records before issue 25
            ts = (f"{tianshou['steps_per_sec']:.1f} | {mine['steps_per_sec'] / tianshou['steps_per_sec']:.2f}x"
                  if tianshou else "not run | –")
            rates = [f"{run['steps_per_sec']:.1f}" for run in runs[lib]]
            each = f"; runs {', '.join(rates)}" if len(rates) > 1 else ""
            print(f"| {label} | {mine['steps_per_sec']:.1f} (update share {mine['share_update']:.0%}{each}) | "
                  f"{sb3['steps_per_sec']:.1f} | {mine['steps_per_sec'] / sb3['steps_per_sec']:.2f}x | {ts} | {flops} |")


def scale(path: Path) -> None:
    """The newest scale.py record: PPO steps/s by env count, DSAC-T updates/s by batch size (medians, every repeat)."""
    data = _records(path)[-1]
    print(f"Machine: {data['machine']}; commit {data.get('commit', '?')}; backend {data['backend']}, "
          f"{data['repeats']} alternating repeats\n")
    print("| PPO on HalfCheetah-v5, 2048 transitions per iteration | steps/s (median) | env | inference | update | "
          "runs |\n|---|---|---|---|---|---|")
    for n, runs in data["ppo_vs_envs"].items():
        share = {k: np.median([r[f"share_{k}"] for r in runs]) for k in ("env", "inference", "update")}
        each = ", ".join(f"{r['steps_per_sec']:.0f}" for r in runs)
        print(f"| {n} envs x {runs[0]['num_steps']} steps | {np.median([r['steps_per_sec'] for r in runs]):,.0f} | "
              f"{share['env']:.0%} | {share['inference']:.0%} | {share['update']:.0%} | {each} |")
    print("\n| DSAC-T on HalfCheetah-v5, 3x256, one update per step | updates/s (median) | samples/s | update share | "
          "runs |\n|---|---|---|---|---|")
    for batch, runs in data["dsac_vs_batch"].items():
        each = ", ".join(f"{r['updates_per_sec']:.1f}" for r in runs)
        print(f"| batch {batch} | {np.median([r['updates_per_sec'] for r in runs]):.1f} | "
              f"{np.median([r['samples_per_sec'] for r in runs]):,.0f} | "
              f"{np.median([r['share_update'] for r in runs]):.0%} | {each} |")


def _records(path: Path) -> list[dict]:
    """The JSON lines of a benchmark output file (blank lines skipped)."""
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def curves(path: Path, key: str) -> None:
    records = _records(path)
    groups: dict[tuple, list] = defaultdict(list)
    for r in records:
        groups[(r["env"], record_name(r, key), r["steps"])].append(r)
    print(f"| env | {key} | budget | seeds | final eval return mean ± std over seeds | per seed | "
          f"best eval (mean over seeds) | wall time per run |\n|---|---|---|---|---|---|---|---|")
    for (env, name, steps), runs in sorted(groups.items()):
        finals = np.array([r["final"] for r in runs])
        best = np.mean([max(v for _, v in r["curve"]) for r in runs])
        per_seed = ", ".join(f"s{r['seed']}: {r['final']:.0f}" for r in sorted(runs, key=lambda r: r["seed"]))
        minutes = np.mean([r["seconds"] for r in runs]) / 60
        print(f"| {env} | {name} | {steps:,} | {len(runs)} | {finals.mean():.0f} ± {finals.std():.0f} | "
              f"{per_seed} | {best:.0f} | {minutes:.1f} min |")


def paired_variants(path: Path, baseline: str = "study preset") -> None:
    """Each variant against ``baseline`` on the seeds both ran: the final returns' mean, IQM with a 95% bootstrap
    CI over seeds, every seed, the per-seed difference to the baseline, and the policy std at the end."""
    import sys

    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
    from rlkit2.sweep import iqm, stratified_bootstrap_ci

    records = _records(path)
    print(f"| env | variant | budget | seeds | final mean ± std | IQM [95% CI] | per seed | minus {baseline}, per seed | "
          f"final action std (mean) |\n|---|---|---|---|---|---|---|---|---|")
    for env in sorted({r["env"] for r in records}):
        base = {r["seed"]: r["final"] for r in records if r["env"] == env and r["variant"] == baseline}
        for variant in dict.fromkeys(r["variant"] for r in records if r["env"] == env):
            runs = sorted((r for r in records if r["env"] == env and r["variant"] == variant), key=lambda r: r["seed"])
            finals = np.array([r["final"] for r in runs])
            low, high = stratified_bootstrap_ci({env: list(finals)})
            diffs = ", ".join(f"s{r['seed']}: {r['final'] - base[r['seed']]:+.0f}" for r in runs if r["seed"] in base)
            stds = [r["action_std_final"] for r in runs if "action_std_final" in r]
            std_cell = f"{np.mean(stds):.3f}" if stds else "–"
            per_seed = ", ".join(f"s{r['seed']}: {r['final']:.0f}" for r in runs)
            print(f"| {env} | {variant} | {runs[0]['steps']:,} | {len(runs)} | {finals.mean():.0f} ± {finals.std():.0f} | "
                  f"{iqm(finals):.0f} [{low:.0f}, {high:.0f}] | {per_seed} | "
                  f"{'–' if variant == baseline else diffs or '–'} | {std_cell} |")


def pref_target(path: Path, labels: int = 1400, target: float = 0.8) -> None:
    """Per env: PPO on the reward learned from ``labels`` labels against PPO on the true reward (same seeds), as a
    ratio of the final evaluation returns' means, and per seed."""
    records = _records(path)
    print(f"| task | {labels} labels | true reward | ratio (target {target:.0%}) | per seed |\n|---|---|---|---|---|")
    for env in sorted({r["env"] for r in records}):
        learned = _finals_by_seed([r for r in records if r["env"] == env and r["variant"].startswith(f"{labels} ")])
        true = _finals_by_seed([r for r in records if r["env"] == env and r["variant"].startswith("true reward")])
        seeds = sorted(set(learned) & set(true))  # like for like: the seeds both variants ran
        if not seeds:
            continue
        a, b = np.array([learned[s] for s in seeds]), np.array([true[s] for s in seeds])
        ratio = a.mean() / b.mean()
        per_seed = ", ".join(f"s{s}: {learned[s] / true[s]:.0%}" for s in seeds)
        verdict = "met" if ratio >= target else "not met"
        print(f"| {env} | {a.mean():.0f} ± {a.std():.0f} | {b.mean():.0f} ± {b.std():.0f} | "
              f"**{ratio:.0%}, {verdict}** | {per_seed} |")


def eval_steps(path: Path, key: str = "variant") -> None:
    """Each variant's evaluation return at each evaluation step (mean over seeds, and the seeds' count): for tasks
    like Pong, whose returns (-21 to 21) make a ratio meaningless."""
    records = _records(path)
    groups: dict[tuple, list] = defaultdict(list)
    for r in records:
        groups[(r["env"], record_name(r, key), r["steps"])].append(r)
    for (env, name, _), runs in sorted(groups.items()):
        print(f"{env}, {name}, {len(runs)} seed(s):\n")
        print("| env steps | " + " | ".join(f"{step:,}" for step, _ in runs[0]["curve"]) + " |")
        print("|---|" + "---|" * len(runs[0]["curve"]))
        means = np.mean([[v for _, v in r["curve"]] for r in runs], axis=0)
        print("| eval return | " + " | ".join(f"{v:.1f}" for v in means) + " |\n")


def pref_events(path: Path, offsets: tuple[int, ...] = (-10, -8, -6, -4, -2, -1, 0, 1, 2, 3)) -> None:
    """pref_reward_events.py records: how the learned reward looks on played steps (in the std units it was
    normalised to) and its mean around lost points (true reward < 0), one row per record."""
    records = _records(path)
    print("| run | reset padding | std | std without the 0.1% largest | largest \\|r\\| (episode step) | "
          + " | ".join(f"{o:+d}" for o in offsets) + " | lost points |\n|---|---|---|---|---|"
          + "---|" * len(offsets) + "---|")
    for r in records:
        w = r["window"]
        mean = r["negative"]["mean"]
        around = " | ".join(f"{mean[o + w]:+.2f}" if -w <= o <= w and mean else "" for o in offsets)
        print(f"| {r['run']} | {'zeros' if r['zero_padding'] else 'filled'} | "
              f"{r['std']:.2f} | {r['std_without_top_0.1%']:.2f} | {r['max_abs']:.0f} ({r['max_abs_episode_step']}) | "
              f"{around} | {r['negative']['events']} |")


def _finals_by_seed(records: list[dict]) -> dict[int, float]:
    """Final returns by seed, refusing a mix of variants or two runs of one seed (which one would count?)."""
    names = {r["variant"] for r in records}
    if len(names) > 1:
        raise SystemExit(f"report: one table compares one variant with another, but this file mixes {sorted(names)}; "
                         "split the records into separate files")
    seeds = [r["seed"] for r in records]
    if len(seeds) != len(set(seeds)):
        raise SystemExit(f"report: {sorted(names)[0]} has two runs of one seed ({sorted(seeds)}); keep one")
    return {r["seed"]: r["final"] for r in records}


def exploration(path: Path) -> None:
    records = _records(path)
    groups: dict[tuple, list] = defaultdict(list)
    for r in records:
        groups[(r["env"], r["lib"], r["steps"])].append(r)
    print("| env | agent | budget | seeds | final success rate (mean over seeds) | per seed | final return mean ± std | "
          "first step with success ≥ 0.5 (per seed) | training steps/s (median) |\n|---|---|---|---|---|---|---|---|---|")
    for (env, agent, steps), runs in sorted(groups.items()):
        runs = sorted(runs, key=lambda r: r["seed"])
        finals = np.array([r["final"] for r in runs])
        success = np.mean([r["final_success"] for r in runs])
        per_seed = ", ".join(f"s{r['seed']}: {r['final_success']:.2f}" for r in runs)
        first = ", ".join(str(next((s for s, v in r["success_curve"] if v >= 0.5), "never")) for r in runs)
        sps = np.median([r["steps_per_sec"] for r in runs])
        print(f"| {env} | {agent} | {steps:,} | {len(runs)} | {success:.2f} | {per_seed} | {finals.mean():.2f} ± "
              f"{finals.std():.2f} | {first} | {sps:,.0f} |")


def vpn_collect(path: Path) -> None:
    records = _records(path)
    groups: dict[tuple, list] = defaultdict(list)
    for r in records:
        groups[(r["env"], r["method"], r["steps"], " ".join(r.get("overrides", [])))].append(r)
    print("| env | method | budget | overrides | seeds | final eval return mean ± std | per seed | best eval (mean) | "
          "training steps/s (median) | wall time per run |\n|---|---|---|---|---|---|---|---|---|---|")
    for (env, method, steps, extra), runs in sorted(groups.items()):
        runs = sorted(runs, key=lambda r: r["seed"])
        finals = np.array([r["final"] for r in runs])
        per_seed = ", ".join(f"s{r['seed']}: {r['final']:.2f}" for r in runs)
        print(f"| {env} | {method} | {steps:,} | {extra or '-'} | {len(runs)} | {finals.mean():.2f} ± {finals.std():.2f} | "
              f"{per_seed} | {np.mean([r['best'] for r in runs]):.2f} | "
              f"{np.median([r['steps_per_sec'] for r in runs]):,.0f} | {np.mean([r['seconds'] for r in runs]) / 60:.1f} min |")


def vpn_planning(path: Path) -> None:
    data = json.loads(path.read_text())
    print(f"Machine: {data['machine']}, torch {data['torch']}; network {data['network']}  \nCommand: `{data['command']}`\n")
    sizes = sorted({r["envs"] for r in data["rows"]})
    print("| planner | " + " | ".join(f"{n} env{'s' if n > 1 else ''}: decisions/s (ms per batch)" for n in sizes)
          + " |\n|---|" + "---|" * len(sizes))
    for name in dict.fromkeys(r["planner"] for r in data["rows"]):
        cells = [next(r for r in data["rows"] if r["planner"] == name and r["envs"] == n) for n in sizes]
        print(f"| {name} | " + " | ".join(f"{c['decisions_per_sec']:,.0f} ({c['ms_per_call']:.1f})" for c in cells) + " |")


def collect_env(path: Path) -> None:
    data = json.loads(path.read_text())
    print(f"Machine: {data['machine']}  \nCommand: `{data['command']}`\n")
    print("| env | envs | batched: option-steps/s | sync vector of single envs | batched / sync |\n|---|---|---|---|---|")
    for r in data["rows"]:
        print(f"| {r['env']} | {r['envs']} | {r['batched']:,.0f} | {r['sync']:,.0f} | {r['speedup']:.1f}x |")


def read_sweep(path: Path) -> dict:
    """A sweep's results.json (written by ``scripts/sweep.py`` in ROOT/NAME/, copied to docs/bench/sweeps/), or the
    sweep folder itself."""
    path = path / "results.json" if path.is_dir() else path
    if not path.is_file():
        raise SystemExit(f"report: no sweep results at {path}; run `python scripts/sweep.py --name NAME --table` "
                         "to gather them")
    return json.loads(path.read_text())


def sweep_table(path: Path) -> None:
    """One row per (env, config) of a sweep over its seeds: the final evaluation's mean ± std, IQM with a 95%
    bootstrap CI, every seed, the best evaluation, wall time and speed; trials not finished are listed as such.
    The spec's [report] table adds: ``baseline`` (per-seed differences to that config), ``columns`` (the last logged
    value of those metrics, mean over seeds), ``first_reaching`` (the first evaluation step at which a metric reached
    a threshold, per seed), ``ratio`` (a config's final mean as a share of the baseline's, against a target) and
    ``steps_table`` (the mean at every evaluation step)."""
    import sys

    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
    from rlkit2.sweep import iqm, stratified_bootstrap_ci

    data = read_sweep(path)
    options, trials = data.get("report", {}), data["trials"]
    baseline, columns = options.get("baseline"), options.get("columns", [])
    reach = options.get("first_reaching")
    name_of = lambda t: t["config"] if t["config"] != "default" else t["agent"]  # noqa: E731
    groups: dict[tuple, list] = defaultdict(list)
    for t in trials:
        groups[(t["env"], name_of(t))].append(t)
    commits = sorted({t["commit"] for t in trials if t.get("commit")})
    print(f"Sweep `{data['sweep']}`, metric `{data['metric']}`, {len(trials)} trials; code: {', '.join(commits) or '?'}\n")
    head = ["env", "config", "budget", "seeds done", "final mean ± std", "IQM [95% CI]", "per seed"]
    head += [f"minus {baseline}, per seed"] if baseline else []
    head += [f"final {c} (mean)" for c in columns]
    head += [f"first step with {reach['metric']} ≥ {reach['threshold']} (per seed)"] if reach else []
    head += ["best eval (mean)", "wall time per run", "steps/s (median)"]
    print("| " + " | ".join(head) + " |\n|" + "---|" * len(head))
    for (env, config), runs in groups.items():
        runs = sorted(runs, key=lambda t: t["seed"])
        done = [t for t in runs if t["final"] is not None]
        finals = np.array([t["final"] for t in done])
        budget = max(int(t["overrides"].get("total_steps", t["steps"])) for t in runs)
        per_seed = ", ".join(f"s{t['seed']}: {t['final']:.0f}" if t["final"] is not None else
                             f"s{t['seed']}: {t['status']}" + (f" ({t['error']})" if t.get("error") else "")
                             for t in runs)
        cells = [env, config, f"{budget:,}", f"{len(done)}/{len(runs)}"]
        if len(done):
            low, high = stratified_bootstrap_ci({env: list(finals)})
            cells += [f"{finals.mean():.0f} ± {finals.std():.0f}", f"{iqm(finals):.0f} [{low:.0f}, {high:.0f}]"]
        else:
            cells += ["–", "–"]
        cells.append(per_seed)
        if baseline:
            base = {t["seed"]: t["final"] for t in groups.get((env, baseline), []) if t["final"] is not None}
            diffs = ", ".join(f"s{t['seed']}: {t['final'] - base[t['seed']]:+.0f}" for t in done if t["seed"] in base)
            cells.append("–" if config == baseline else diffs or "–")
        for column in columns:
            values = [t["last"][column] for t in done if column in t.get("last", {})]
            cells.append(f"{np.mean(values):.3g}" if values else "–")
        if reach:
            logged = [t for t in done if t["curves"].get(reach["metric"])]  # "never" only where it was measured
            cells.append(", ".join(str(next((s for s, v in t["curves"][reach["metric"]] if v >= reach["threshold"]),
                                            "never")) for t in logged) or "–")
        best = [t["best"] for t in done if t["best"] is not None]
        times = [t["wall_time_s"] for t in done if t.get("wall_time_s")]
        speeds = [t["steps_per_sec"] for t in done if t.get("steps_per_sec")]
        cells += [f"{np.mean(best):.0f}" if best else "–", f"{np.mean(times) / 60:.1f} min" if times else "–",
                  f"{np.median(speeds):,.0f}" if speeds else "–"]
        print("| " + " | ".join(cells) + " |")
    if options.get("ratio") and baseline:
        variant, target = options["ratio"]["variant"], options["ratio"].get("target")
        print(f"\n| env | {variant} | {baseline} | ratio{f' (target {target:.0%})' if target else ''} | per seed |"
              "\n|---|---|---|---|---|")
        for env in dict.fromkeys(e for e, _ in groups):
            mine = {t["seed"]: t["final"] for t in groups.get((env, variant), []) if t["final"] is not None}
            base = {t["seed"]: t["final"] for t in groups.get((env, baseline), []) if t["final"] is not None}
            seeds = sorted(set(mine) & set(base))  # like for like: the seeds both ran
            if not seeds:
                continue
            a, b = np.array([mine[s] for s in seeds]), np.array([base[s] for s in seeds])
            ratio = a.mean() / b.mean()
            verdict = "" if target is None else f", {'met' if ratio >= target else 'not met'}"
            print(f"| {env} | {a.mean():.0f} ± {a.std():.0f} | {b.mean():.0f} ± {b.std():.0f} | **{ratio:.0%}{verdict}** | "
                  + ", ".join(f"s{s}: {mine[s] / base[s]:.0%}" for s in seeds) + " |")
    if options.get("published"):
        _published_peers(groups, options["published"])
    if options.get("steps_table"):
        for (env, config), runs in groups.items():
            steps = sorted({s for t in runs for s, _ in t["curve"]})
            if not steps:
                continue
            means = [np.mean([v for t in runs for s, v in t["curve"] if s == step]) for step in steps]
            print(f"\n{env}, {config}, {len(runs)} seed(s):\n\n| env steps | " + " | ".join(f"{s:,}" for s in steps)
                  + " |\n|---|" + "---|" * len(steps) + "\n| eval return | " + " | ".join(f"{v:.1f}" for v in means) + " |")


def _published_peers(groups: dict[tuple, list], published: dict[str, dict[str, list[float]]]) -> None:
    """Our final evaluation beside published results of other libraries, per env: ours as final mean ± std over
    seeds, and as the maximum over evaluation steps of the mean over seeds (the metric of Tianshou's table); each
    library's published mean ± std; and whether our final mean reaches the best published mean."""
    names = list(published)
    print("\n| env | ours: final mean ± std (seeds) | ours: max over evaluations of the mean over seeds | "
          + " | ".join(names) + " | ours (final) vs the best published |\n|---|---|---|" + "---|" * len(names) + "---|")
    for (env, _), runs in groups.items():
        done = [t for t in runs if t["final"] is not None]
        cells = [env]
        if done:
            finals = np.array([t["final"] for t in done])
            steps = sorted(set.intersection(*({s for s, _ in t["curve"]} for t in done)))
            best_mean = max(np.mean([dict(map(tuple, t["curve"]))[s] for t in done]) for s in steps)
            cells += [f"{finals.mean():.0f} ± {finals.std():.0f} ({len(done)})", f"{best_mean:.0f}"]
        else:
            cells += ["–", "–"]
        theirs = {name: published[name].get(env) for name in names}
        cells += [f"{v[0]:.0f} ± {v[1]:.0f}" if v else "not published" for v in theirs.values()]
        known = [v[0] for v in theirs.values() if v]
        if done and known:
            best = max(known)
            cells.append(f"{finals.mean() / best:.0%} of {best:.0f}: **{'reached' if finals.mean() >= best else 'not reached'}**")
        else:
            cells.append("–")
        print("| " + " | ".join(cells) + " |")


def remote_workers(path: Path) -> None:
    """scripts/bench/remote_workers.py output: transfer costs, then PPO steps/s per env and worker count (medians,
    every repeat, the ratio to W = 0, the phase shares) and the Amdahl bound from W = 0's update share."""
    data = json.loads(path.read_text())
    t, settings = data["transfer"], data["settings"]
    print(f"Machine: {data['machine']['cpus']} CPUs, {data['machine']['platform']}, Ray {data['ray']}, commit "
          f"{data['commit']}  \nCommand: `{data['command']}`\n")
    print("| cost on a local Ray (127.0.0.1) | median | every call |\n|---|---|---|")
    for key, label in (("empty_call_ms", "an empty actor call (round trip)"),
                       ("rollout_ms", f"moving one worker's rollout ({t['rollout_shape'][0]} steps x "
                                      f"{t['rollout_shape'][1]} envs, {t['rollout_mb']:.2f} MB), beyond an empty call"),
                       ("broadcast_ms", f"one broadcast of the acting weights ({t['weights']:,} parameters, "
                                        f"{t['weights_mb']:.2f} MB) to {t['workers']} workers, beyond empty calls")):
        every = ", ".join(f"{v:.1f}" for v in t[key])
        print(f"| {label} | {t['median'][key]:.2f} ms | {every} |")
    print(f"\n| PPO, {settings['num_envs']} envs x {settings['num_steps']} steps per iteration, {settings['steps']:,} "
          "steps per run | workers | steps/s (median) | vs no workers | every repeat | phase shares (median) |"
          "\n|---|---|---|---|---|---|")
    for env, by_workers in data["runs"].items():
        base = data["median_steps_per_sec"][env].get("0")
        for w, runs in by_workers.items():
            median = data["median_steps_per_sec"][env][w]
            shares = ", ".join(f"{k.replace('share_', '')} {np.median([r['shares'].get(k, 0.0) for r in runs]):.0%}"
                               for k in runs[0]["shares"])
            every = ", ".join(f"{r['steps_per_sec']:.0f}" for r in runs)
            print(f"| {env} | {w} | {median:,.0f} | {median / base:.2f}x | {every} | {shares} |" if base else
                  f"| {env} | {w} | {median:,.0f} | – | {every} | {shares} |")
    for env, scale in data.get("amdahl", {}).items():
        bound = ", ".join(f"W = {w}: {v:.2f}x" for w, v in scale["bound_without_overhead"].items())
        print(f"\n{env}: update share without workers {scale['update_share_w0']:.0%}; Amdahl's bound {bound}.")


def _capture(fn, *fn_args) -> str:
    import contextlib
    import io

    buffer = io.StringIO()
    with contextlib.redirect_stdout(buffer):
        fn(*fn_args)
    return buffer.getvalue().strip()


def main() -> None:
    import re

    parser = argparse.ArgumentParser()
    parser.add_argument("--throughput", type=Path)
    parser.add_argument("--learning", type=Path)
    parser.add_argument("--ablation", type=Path)
    parser.add_argument("--learning-long", type=Path, help="longer-budget learning runs (block learning_long)")
    parser.add_argument("--ablation-squash", type=Path, help="ablation.py clip vs tanh records (block ablation_squash)")
    parser.add_argument("--atari-speed", type=Path, help="scripts/bench/atari_speed.py output (block atari_speed)")
    parser.add_argument("--atari-precision", type=Path,
                        help="atari_speed.py's fp32 vs bf16 record (block atari_precision)")
    parser.add_argument("--atari-pong", type=Path, help="scripts/bench/run_record.py records of Pong runs (block atari_pong)")
    parser.add_argument("--dsac-speed", type=Path, help="scripts/bench/dsac_speed.py output (block dsac_speed)")
    parser.add_argument("--dsac-learning", type=Path, help="scripts/bench/dsac_learning.py output (block dsac_learning)")
    parser.add_argument("--agac-exploration", type=Path,
                        help="scripts/bench/agac_exploration.py output (block agac_exploration)")
    parser.add_argument("--vpn-collect", type=Path, help="scripts/bench/vpn_collect.py learning output (block vpn_collect)")
    parser.add_argument("--vpn-planning", type=Path, help="scripts/bench/vpn_collect.py planning output (block vpn_planning)")
    parser.add_argument("--collect-env", type=Path, help="scripts/bench/collect_env.py output (block collect_env)")
    parser.add_argument("--pref-mujoco", type=Path, help="scripts/bench/pref_mujoco.py output (block pref_mujoco)")
    parser.add_argument("--pref-mujoco-entropy", type=Path,
                        help="pref_mujoco.py output with --rl-set entropy_coef=0.01 (block pref_mujoco_entropy)")
    parser.add_argument("--pref-events", type=Path, help="pref_reward_events.py output (block pref_events)")
    parser.add_argument("--pref-atari", type=Path, help="pref_mujoco.py output on Atari (block pref_atari)")
    parser.add_argument("--sweep", action="append", default=[], metavar="BLOCK=PATH",
                        help="a sweep's results.json (or its folder) rendered into block BLOCK (repeatable)")
    parser.add_argument("--remote-workers", type=Path, help="scripts/bench/remote_workers.py output (block remote_workers)")
    parser.add_argument("--scale", type=Path, help="scripts/bench/scale.py output (block scale)")
    parser.add_argument("--write-into", type=Path)
    args = parser.parse_args()
    blocks = {}
    if args.throughput:
        blocks["throughput"] = _capture(throughput, args.throughput)
    if args.learning:
        blocks["learning"] = _capture(curves, args.learning, "lib")
    if args.ablation:
        blocks["ablation"] = _capture(curves, args.ablation, "variant")
    if args.ablation_squash:
        blocks["ablation_squash"] = _capture(paired_variants, args.ablation_squash)
    if args.learning_long:
        blocks["learning_long"] = _capture(curves, args.learning_long, "lib")
    if args.atari_speed:
        blocks["atari_speed"] = _capture(atari_speed, args.atari_speed)
    if args.atari_precision:
        blocks["atari_precision"] = _capture(atari_speed, args.atari_precision)
    if args.atari_pong:
        blocks["atari_pong"] = _capture(curves, args.atari_pong, "run")
    if args.dsac_speed:
        blocks["dsac_speed"] = _capture(dsac_speed, args.dsac_speed)
    if args.dsac_learning:
        blocks["dsac_learning"] = _capture(curves, args.dsac_learning, "algo")
    if args.agac_exploration:
        blocks["agac_exploration"] = _capture(exploration, args.agac_exploration)
    if args.vpn_collect:
        blocks["vpn_collect"] = _capture(vpn_collect, args.vpn_collect)
    if args.vpn_planning:
        blocks["vpn_planning"] = _capture(vpn_planning, args.vpn_planning)
    if args.collect_env:
        blocks["collect_env"] = _capture(collect_env, args.collect_env)
    if args.pref_mujoco:
        blocks["pref_mujoco_target"] = _capture(pref_target, args.pref_mujoco)
        blocks["pref_mujoco"] = _capture(curves, args.pref_mujoco, "variant")
    if args.pref_mujoco_entropy:
        blocks["pref_mujoco_entropy"] = (_capture(pref_target, args.pref_mujoco_entropy) + "\n\n"
                                         + _capture(curves, args.pref_mujoco_entropy, "variant"))
    if args.pref_events:
        blocks["pref_events"] = _capture(pref_events, args.pref_events)
    if args.pref_atari:
        # one command ran on successive code (reward-model fixes): each run is named by its variant and commit
        blocks["pref_atari"] = (_capture(curves, args.pref_atari, "variant+commit") + "\n\n"
                                + _capture(eval_steps, args.pref_atari, "variant+commit").rstrip())
    if args.remote_workers:
        blocks["remote_workers"] = _capture(remote_workers, args.remote_workers)
    if args.scale:
        blocks["scale"] = _capture(scale, args.scale)
    for item in args.sweep:
        block, eq, path = item.partition("=")
        if not eq or not block or not path:
            raise SystemExit(f"report: --sweep '{item}' must be BLOCK=PATH, e.g. ppo_mujoco=docs/bench/sweeps/ppo_mujoco.json")
        blocks[block] = _capture(sweep_table, Path(path))
    if not args.write_into:
        print("\n\n".join(blocks.values()))
        return
    text = args.write_into.read_text()
    for name, table in blocks.items():
        pattern = re.compile(rf"(<!-- report:{name} -->\n).*?(<!-- /report -->)", re.S)
        if not pattern.search(text):
            raise SystemExit(f"{args.write_into} has no '<!-- report:{name} -->' block")
        text = pattern.sub(lambda m: m.group(1) + table + "\n" + m.group(2), text)
    args.write_into.write_text(text)
    print(f"updated {', '.join(blocks)} in {args.write_into}")


if __name__ == "__main__":
    main()
