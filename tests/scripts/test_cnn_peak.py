"""scripts/bench/cnn_peak.py: the Nature-CNN's FLOPs by hand, and the ceilings it measures; report.py's Atari
speed table from a record with the peer and the FLOP/s columns."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "scripts" / "bench"))

from cnn_peak import forward_flops, gemm_peak, nature_cnn_layers, shape_peak, train_flops  # noqa: E402


def test_nature_cnn_flops_by_hand():
    layers = nature_cnn_layers(in_channels=4, hw=84, actions=6)
    # conv1: 32 maps of 20x20, each output a 4x8x8 dot product; conv2: 64 of 9x9 over 32x4x4; conv3: 64 of 7x7
    # over 64x3x3; fc 3136 -> 512; heads 512 -> 6 and 512 -> 1. Two FLOPs per multiply-add.
    expected = [2 * 32 * 20 * 20 * 4 * 8 * 8, 2 * 64 * 9 * 9 * 32 * 4 * 4, 2 * 64 * 7 * 7 * 64 * 3 * 3,
                2 * 3136 * 512, 2 * 512 * 6, 2 * 512 * 1]
    assert [layer.forward_flops for layer in layers] == expected
    assert forward_flops(layers) == sum(expected) == 18_693_120
    # backward = weight gradient + input gradient (F each), but the frames need no gradient
    assert train_flops(layers) == 3 * sum(expected) - expected[0]
    chained = torch.zeros(1, *layers[0].in_shape)
    for layer in layers[:3]:  # each conv's declared input is what the previous one puts out
        assert tuple(chained.shape[1:]) == layer.in_shape
        chained = layer.module()(chained)
    assert chained.numel() == layers[3].in_shape[0] == 3136


def test_the_ceilings_are_measured_per_layer_and_in_total():
    layers = nature_cnn_layers()
    peak = shape_peak(layers, batch=8, threads=1, min_seconds=0.01)
    assert set(peak["layers"]) == {layer.name for layer in layers}
    assert all(v["gflops_per_sec"] > 0 and v["ms"] > 0 for v in peak["layers"].values())
    total_ms = sum(v["ms"] for v in peak["layers"].values())
    assert peak["gflops_per_sec"] == pytest.approx(8 * train_flops(layers) / (total_ms / 1e3) / 1e9)
    assert gemm_peak(1, n=64, min_seconds=0.01) > 0


def test_report_renders_the_atari_speed_record_with_the_peer_and_the_ceilings(tmp_path):
    run = {"steps_per_sec": 200.0, "share_update": 0.7, "update_gflops_per_sec": 30.0}
    sb3 = {"steps_per_sec": 160.0, "share_collect": 0.25, "update_gflops_per_sec": 20.0}
    peak = {"gflops_per_sec": 40.0, "gemm_gflops_per_sec": 60.0}
    record = {"machine": {"cpu": "test CPU"}, "command": "atari_speed.py", "peak": {"threads=1": [peak, peak]},
              "runs": {"rlkit2 threads_update=1, cnn_precision=fp32": [run, run], "sb3 threads=1": [sb3, sb3]},
              "median": {"rlkit2 threads_update=1, cnn_precision=fp32": {k: run[k] for k in ("steps_per_sec",
                                                                                            "update_gflops_per_sec")},
                         "sb3 threads=1": {k: sb3[k] for k in ("steps_per_sec", "update_gflops_per_sec")}},
              "median_peak": {"threads=1": peak}}
    path = tmp_path / "atari_speed.json"
    path.write_text(json.dumps(record))
    out = subprocess.run([sys.executable, str(ROOT / "scripts" / "bench" / "report.py"), "--atari-speed", str(path)],
                         capture_output=True, text=True, check=True).stdout
    assert "| rlkit2 threads_update=1, cnn_precision=fp32 | 200 | 1.25x | 70% | 30.0 | 75% | 50% | 200, 200 |" in out
    assert "| sb3 threads=1 | 160 |  | 75% | 20.0 | 50% | 33% | 160, 160 |" in out
    assert "| threads=1 | 40.0 | 60.0 | 40.0, 40.0 |" in out
