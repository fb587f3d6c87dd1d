"""scripts/bench/gpu.py and scripts/bench/scale.py: their CPU-safe parts at tiny sizes -- the refusal without CUDA,
argument errors, and the records (and plot) they write."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "scripts" / "bench"))

import gpu  # noqa: E402
import scale  # noqa: E402


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA")
def test_gpu_refuses_without_cuda_in_one_line_with_exit_2(tmp_path):
    out = tmp_path / "gpu.jsonl"
    done = subprocess.run([sys.executable, str(ROOT / "scripts" / "bench" / "gpu.py"), "--out", str(out)],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 2
    assert done.stderr.strip().count("\n") == 0 and "no CUDA device here" in done.stderr
    assert "--device cpu --smoke" in done.stderr and not out.exists()


def test_gpu_refuses_an_unknown_device():
    assert gpu.refuse_without_device("tpu") == "gpu.py: --device must be cuda, cuda:N or cpu, got 'tpu'"
    assert gpu.refuse_without_device("cpu") is None


def test_gpu_cpu_smoke_records_every_part(tmp_path, capsys):
    out = tmp_path / "gpu.jsonl"
    assert gpu.main(["--device", "cpu", "--smoke", "--out", str(out)]) == 0
    (record,) = [json.loads(line) for line in out.read_text().splitlines()]
    assert record["device"] == "cpu" and record["smoke"] and record["commit"]
    assert "cuda_tests" not in record  # nothing to run on a CPU
    for part in ("ppo_mujoco", "inference", "dsac", "graphs"):
        assert "error" not in record[part], record[part]
    assert record["ppo_mujoco"]["cpu"]["steps_per_sec"] > 0 and record["dsac"]["cpu"]["updates_per_sec"] > 0
    shares = record["ppo_mujoco"]["cpu"]
    assert 0.5 < shares["share_env"] + shares["share_inference"] + shares["share_update"] <= 1.0 + 1e-6
    mlp = record["inference"]["cpu"]["mlp"]
    # one batched forward for all envs: 8 envs cost far less than 8 x one env per env
    assert mlp["8"]["us_per_env"] < mlp["1"]["us_per_env"]
    assert record["graphs"]["eager_us"] > 0 and "cuda_graph_us" not in record["graphs"]


def test_scale_smoke_records_ppo_vs_envs_and_dsac_vs_batch_and_plots(tmp_path):
    out, png = tmp_path / "scale.jsonl", tmp_path / "scale.png"
    assert scale.main(["--smoke", "--repeats", "1", "--out", str(out), "--plot", str(png)]) == 0
    (record,) = [json.loads(line) for line in out.read_text().splitlines()]
    assert sorted(record["ppo_vs_envs"], key=int) == ["1", "2"]
    for n, rows in record["ppo_vs_envs"].items():
        assert rows[0]["num_envs"] == int(n) and rows[0]["num_envs"] * rows[0]["num_steps"] == 32
        assert rows[0]["steps_per_sec"] > 0
    for batch, rows in record["dsac_vs_batch"].items():
        assert rows[0]["samples_per_sec"] == pytest.approx(rows[0]["updates_per_sec"] * int(batch))
    assert png.stat().st_size > 1000 and png.read_bytes()[:4] == b"\x89PNG"


@pytest.mark.parametrize("argv, message", [
    (["--envs", "3"], "--envs 3: each must divide the 2048 transitions per iteration"),
    (["--envs", "0,8"], "expected comma-separated positive integers, got '0,8'"),
    (["--repeats", "0"], "--repeats must be >= 1, got 0"),
])
def test_scale_bad_arguments_say_what_is_wrong(argv, message, capsys):
    with pytest.raises(SystemExit) as exit_info:
        scale.parse_args(argv)
    assert exit_info.value.code == 2 and message in capsys.readouterr().err
