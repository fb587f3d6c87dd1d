"""bf16 only where the hardware computes it: the CPU's bf16 support read from /proc/cpuinfo, and a bf16 option
refused, with the CPU's name and the fix, where it would run emulated (rlkit2/device.py)."""

import pytest
import torch

import envs
from rlkit2 import device as device_module
from rlkit2.config import ConfigError
from rlkit2.device import ALLOW_SLOW_BF16, check_bf16, cpu_bf16_support

# abridged /proc/cpuinfo of the machines behind docs/benchmarks.md's bf16 figures
EPYC = """processor\t: 0
vendor_id\t: AuthenticAMD
model name\t: AMD EPYC 7B13 64-Core Processor
flags\t\t: fpu vme sse sse2 ssse3 sse4_1 sse4_2 avx f16c fma avx2 bmi2 sha_ni
processor\t: 1
model name\t: AMD EPYC 7B13 64-Core Processor
"""
XEON_AVX512_BF16 = """model name\t: Intel(R) Xeon(R) Platinum 8375C CPU @ 2.90GHz
flags\t\t: fpu sse avx avx2 avx512f avx512bw avx512_bf16 avx512_vnni
"""
XEON_AMX = "model name\t: Intel(R) Xeon(R) Processor\nflags\t\t: avx2 avx512f amx_bf16 amx_tile amx_int8\n"
GRAVITON3 = "processor\t: 0\nFeatures\t: fp asimd evtstrm aes sha3 sve svebf16 i8mm bf16 dgh\nCPU part\t: 0xd40\n"


@pytest.fixture(autouse=True)
def _no_override(monkeypatch):
    monkeypatch.delenv(ALLOW_SLOW_BF16, raising=False)


def test_cpu_bf16_support_reads_the_flags_and_the_model_name():
    assert cpu_bf16_support(EPYC) == (False, "AMD EPYC 7B13 64-Core Processor")
    assert cpu_bf16_support(XEON_AVX512_BF16) == (True, "Intel(R) Xeon(R) Platinum 8375C CPU @ 2.90GHz")
    assert cpu_bf16_support(XEON_AMX)[0] is True
    assert cpu_bf16_support(GRAVITON3)[0] is True  # Arm's BF16 extension ('svebf16' alone would not count)
    assert cpu_bf16_support(GRAVITON3.replace(" bf16", ""))[0] is False
    assert cpu_bf16_support("")[0] is None  # no /proc/cpuinfo (not Linux): unknown


def test_bf16_on_a_cpu_without_it_is_refused_with_the_cpu_and_the_fix():
    with pytest.raises(ConfigError) as caught:
        check_bf16(torch.device("cpu"), "cnn_precision", cpuinfo=EPYC)
    message = str(caught.value)
    assert "'cnn_precision' is bf16" in message and "AMD EPYC 7B13 64-Core Processor" in message
    assert "no AVX512-BF16 or AMX-BF16" in message and "Fix: --cnn_precision fp32" in message
    assert f"{ALLOW_SLOW_BF16}=1" in message and "\n" not in message
    with pytest.raises(ConfigError, match=r"could not be read.*Fix: --reward_precision fp32"):
        check_bf16(torch.device("cpu"), "reward_precision", cpuinfo="")
    check_bf16(torch.device("cpu"), "cnn_precision", cpuinfo=XEON_AMX)  # native: no error


def test_the_override_runs_bf16_anyway(monkeypatch):
    monkeypatch.setenv(ALLOW_SLOW_BF16, "1")
    check_bf16(torch.device("cpu"), "cnn_precision", cpuinfo=EPYC)
    monkeypatch.setenv(ALLOW_SLOW_BF16, "0")  # '0' is off
    with pytest.raises(ConfigError):
        check_bf16(torch.device("cpu"), "cnn_precision", cpuinfo=EPYC)


def test_a_gpu_without_bf16_is_refused(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: False)
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda *a, **k: "Tesla T4")
    with pytest.raises(ConfigError, match=r"the GPU \(Tesla T4\) has no native bf16. Fix: --cnn_precision fp32"):
        check_bf16(torch.device("cuda"), "cnn_precision")
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: True)
    check_bf16(torch.device("cuda"), "cnn_precision")


def test_ppo_with_bf16_on_a_cpu_without_it_stops_at_the_start(monkeypatch):
    from agents.ppo import OnPolicyAgent, OnPolicyConfig
    from rlkit2.agent import BuildContext

    monkeypatch.setattr(device_module, "read_cpuinfo", lambda: EPYC)
    env = envs.make("ALE/Pong-v5", num_envs=1, seed=0)
    ctx = BuildContext(env=env, device=torch.device("cpu"), total_steps=1000, seed=0, threads_collect=1,
                       threads_update=1)
    try:
        with pytest.raises(ConfigError, match=r"AMD EPYC.*Fix: --cnn_precision fp32 \(--rl.cnn_precision fp32 with "
                                              r"--agent pref\)"):
            OnPolicyAgent(OnPolicyConfig(torso="cnn", cnn_precision="bf16"), ctx)
        monkeypatch.setenv(ALLOW_SLOW_BF16, "1")
        assert OnPolicyAgent(OnPolicyConfig(torso="cnn", cnn_precision="bf16"), ctx).model.policy_torso.bf16
    finally:
        env.close()


def test_train_with_bf16_on_a_cpu_without_it_is_one_line_and_exit_2(monkeypatch, tmp_path, capsys):
    from rlkit2.cli import main_train

    monkeypatch.setattr(device_module, "read_cpuinfo", lambda: EPYC)
    code = main_train(["--agent", "ppo", "--env", "ALE/Pong-v5", "--cnn_precision", "bf16", "--total_steps", "1024",
                       "--runs_dir", str(tmp_path), "--progress", "false", "--tensorboard", "false"])
    err = capsys.readouterr().err
    assert code == 2 and "Traceback" not in err
    assert "AMD EPYC 7B13 64-Core Processor" in err and "Fix: --cnn_precision fp32" in err
