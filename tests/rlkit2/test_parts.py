"""Distributions, normalizers and networks against closed forms / torch.distributions."""

import math

import pytest
import torch

from rlkit2.distributions import Categorical, DiagGaussian, TanhGaussian, softplus_offset, std_from_param
from rlkit2.networks import GridCNN, NatureCNN, mlp
from rlkit2 import normalizers
from rlkit2.normalizers import ObservationNormalizer, RunningMeanStd, ValueNormalizer


def test_diag_gaussian_matches_torch():
    mean, std = torch.randn(5, 3), torch.rand(5, 3) + 0.1
    x = torch.randn(5, 3)
    ref = torch.distributions.Normal(mean, std)
    d = DiagGaussian(mean, std)
    torch.testing.assert_close(d.log_prob(x), ref.log_prob(x).sum(-1))
    torch.testing.assert_close(d.entropy(), ref.entropy().sum(-1))


def test_tanh_gaussian_log_prob_change_of_variables():
    mean, std = torch.zeros(1, 1), torch.ones(1, 1)
    u = torch.tensor([[0.7]])
    expected = torch.distributions.Normal(0.0, 1.0).log_prob(u) - torch.log(1 - torch.tanh(u) ** 2)
    torch.testing.assert_close(TanhGaussian(mean, std).log_prob_from_pre_tanh(u), expected.sum(-1))


def test_categorical_matches_torch():
    logits = torch.randn(4, 6)
    a = torch.tensor([0, 5, 2, 3])
    ref = torch.distributions.Categorical(logits=logits)
    d = Categorical(logits)
    torch.testing.assert_close(d.log_prob(a), ref.log_prob(a))
    torch.testing.assert_close(d.entropy(), ref.entropy())
    assert d.mode().tolist() == logits.argmax(-1).tolist()


@pytest.mark.parametrize("transform", ["softplus", "exp"])
def test_std_parameterisation_starts_at_init_std(transform):
    std = std_from_param(torch.zeros(3), transform, init_std=0.5, min_std=0.01)
    torch.testing.assert_close(std, torch.full((3,), 0.5))
    assert softplus_offset(0.5, 0.0) == pytest.approx(math.log(math.exp(0.5) - 1))
    with pytest.raises(ValueError, match="must be larger than min_std"):
        softplus_offset(0.1, 0.2)


def test_running_mean_std_matches_batch_statistics():
    data = torch.randn(1000, 3, dtype=torch.float64) * 3 + 2
    rms = RunningMeanStd((3,), epsilon=0.0)
    for chunk in data.split(7):
        rms.update(chunk)
    torch.testing.assert_close(rms.mean, data.mean(0))
    torch.testing.assert_close(rms.var, data.var(0, unbiased=False))


def test_observation_normalizer_clips_and_roundtrips_state():
    norm = ObservationNormalizer((2,), clip=1.5)
    norm.update(torch.tensor([[0.0, 0.0], [2.0, 4.0]]))
    out = norm(torch.tensor([[1.0, 2.0], [100.0, -100.0]]))
    torch.testing.assert_close(out[0], torch.zeros(2), atol=1e-3, rtol=0)
    assert out[1].tolist() == [1.5, -1.5]
    other = ObservationNormalizer((2,), clip=1.5)
    other.load_state_dict(norm.state_dict())
    torch.testing.assert_close(other(torch.ones(1, 2)), norm(torch.ones(1, 2)))


def test_observation_normalizer_numpy_path_equals_the_torch_path(monkeypatch):
    """On the CPU the collector's per-step normalization runs in numpy (rlkit2.normalizers.on_host): same statistics
    and outputs as torch's path, up to the last bit of a sum."""
    batches = [torch.randn(8, 17, generator=torch.Generator().manual_seed(i)) * (1 + i) + i for i in range(40)]

    def run() -> tuple[ObservationNormalizer, list[torch.Tensor]]:
        norm = ObservationNormalizer((17,), clip=5.0)
        outs = []
        for batch in batches:
            norm.update(batch)
            outs.append(norm(batch))
        return norm, outs

    host, host_outs = run()
    monkeypatch.setattr(normalizers, "on_host", lambda tensor: False)
    torch_path, torch_outs = run()
    torch.testing.assert_close(host.rms.mean, torch_path.rms.mean, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(host.rms.var, torch_path.rms.var, rtol=1e-12, atol=1e-12)
    assert float(host.rms.count) == float(torch_path.rms.count) == 320 + 1e-4
    for a, b in zip(host_outs, torch_outs):
        torch.testing.assert_close(a, b, rtol=1e-6, atol=1e-6)
    assert max(float(o.abs().max()) for o in host_outs) == 5.0  # the clip is exercised
    assert not normalizers.on_host(torch.ones(2, requires_grad=True))  # autograd keeps torch's path


def test_value_normalizer_inverse():
    vn = ValueNormalizer()
    vn.update(torch.tensor([10.0, 20.0, 30.0]))
    v = torch.tensor([5.0, 25.0])
    torch.testing.assert_close(vn.denormalize(vn.normalize(v)), v)
    assert ValueNormalizer(enabled=False).normalize(v) is v


def test_mlp_last_layer_scale_and_nature_cnn_shape():
    net = mlp(4, (32, 32), 2, out_scale=0.01)
    assert net[-1].weight.abs().max() < 0.05 and net[0].weight.abs().max() > 0.1
    cnn = NatureCNN(4)
    assert cnn(torch.zeros(2, 4, 84, 84, dtype=torch.uint8)).shape == (2, 512)
    with pytest.raises(ValueError, match="Unknown activation 'swish'"):
        mlp(4, (8,), 1, act="swish")


def test_the_nature_cnn_runs_channels_last_with_the_contiguous_layouts_math_and_checkpoints():
    """Channels-last weights and inputs (faster oneDNN convolutions) compute what the contiguous layout computes, to
    float rounding, and a state dict moves between the layouts unchanged."""
    import copy

    torch.manual_seed(0)
    cnn = NatureCNN(4)
    assert all(conv.weight.is_contiguous(memory_format=torch.channels_last)
               for conv in cnn.convs if isinstance(conv, torch.nn.Conv2d))
    contiguous = copy.deepcopy(cnn)
    contiguous.convs.to(memory_format=torch.contiguous_format)
    frames = torch.randint(0, 256, (5, 4, 84, 84), dtype=torch.uint8)
    expected = contiguous.fc(contiguous.convs(frames.float() / 255.0))
    torch.testing.assert_close(cnn(frames), expected, rtol=1e-5, atol=1e-5)
    loaded = NatureCNN(4)
    loaded.convs.to(memory_format=torch.contiguous_format)
    loaded.load_state_dict(cnn.state_dict())
    assert all(torch.equal(a, b) for a, b in zip(loaded.state_dict().values(), cnn.state_dict().values()))


@pytest.mark.parametrize("cls, shape", [(NatureCNN, (4, 84, 84)), (GridCNN, (3, 7, 7))])
def test_bf16_cnn_computes_the_fp32_features_to_bf16_rounding_and_keeps_fp32_weights(cls, shape):
    torch.manual_seed(0)
    fp32, bf16 = cls(shape[0], input_hw=shape[1:]), cls(shape[0], input_hw=shape[1:], precision="bf16")
    bf16.load_state_dict(fp32.state_dict())  # the same parameters: precision is compute only, not stored
    frames = torch.randint(0, 256 if cls is NatureCNN else 11, (16, *shape), dtype=torch.uint8)
    exact, fast = fp32(frames), bf16(frames)
    assert fast.dtype == torch.float32 and not torch.equal(fast, exact)  # it did run in bf16
    # bf16 keeps 8 bits of mantissa: a few 1e-3 relative error per layer
    assert (fast - exact).abs().max() < 0.05 * exact.abs().max()
    fast.pow(2).mean().backward()
    assert all(p.grad is not None and p.grad.dtype == torch.float32 and p.dtype == torch.float32
               for p in bf16.parameters())
    with pytest.raises(ValueError, match="Unknown CNN precision 'fp16'. Allowed: fp32, bf16"):
        cls(shape[0], input_hw=shape[1:], precision="fp16")


def test_record_video_atari(tmp_path):
    import envs
    from rlkit2.evaluation import record_video

    env = envs.make("ALE/Breakout-v5", 1, seed=0, backend="sync", render_mode="rgb_array")
    path = record_video(lambda obs: torch.zeros(len(obs), dtype=torch.long), env, tmp_path / "v.mp4",
                        torch.device("cpu"), max_frames=60)
    assert path.stat().st_size > 1000
    with pytest.raises(ValueError, match="num_envs=1"):
        record_video(lambda obs: obs, envs.make("CartPole-v1", 2), tmp_path / "x.mp4", torch.device("cpu"))


def test_record_video_keeps_every_frame_from_reset_to_the_terminal_state(tmp_path, monkeypatch):
    import imageio.v2 as imageio

    import envs
    from rlkit2.evaluation import record_video

    written = []
    monkeypatch.setattr(imageio, "mimsave", lambda path, frames, **kw: written.append([int(f[0, 0, 0]) for f in frames]))
    env = envs.make("tests.toy_envs:RenderCountingEnv", 1, seed=0, render_mode="rgb_array")
    act = lambda obs: torch.zeros(len(obs), dtype=torch.long)  # noqa: E731
    record_video(act, env, tmp_path / "v.mp4", torch.device("cpu"))
    record_video(act, env, tmp_path / "w.mp4", torch.device("cpu"), episodes=2)
    # t = 0 after reset, then 1, 2 and the terminal 3 (the frame the VecEnv's same-step reset used to drop)
    assert written == [[0, 1, 2, 3], [0, 1, 2, 3, 0, 1, 2, 3]]


def test_rmsprop_tf_matches_hand_computed_steps():
    """TF's RMSprop: v starts at 1 and eps sits inside the square root. Two steps by hand, and torch's RMSprop
    (v from 0, eps outside) for contrast: its first step is ~10x larger."""
    from rlkit2.optim import RMSpropTF

    lr, alpha, eps = 0.1, 0.9, 1e-2
    p = torch.nn.Parameter(torch.tensor([1.0, -2.0]))
    opt = RMSpropTF([p], lr=lr, alpha=alpha, eps=eps)
    grads = [torch.tensor([0.5, -1.0]), torch.tensor([2.0, 0.0])]
    expected, v = torch.tensor([1.0, -2.0]), torch.ones(2)
    for g in grads:
        p.grad = g.clone()
        opt.step()
        v = alpha * v + (1 - alpha) * g * g
        expected = expected - lr * g / torch.sqrt(v + eps)
        assert torch.allclose(p.detach(), expected, atol=1e-6)
    # (v_1 = 0.9 + 0.1 * 0.25 = 0.925 for the first coordinate: the first step is 0.1 * 0.5 / sqrt(0.935))
    assert expected[0].item() == pytest.approx(1.0 - 0.1 * 0.5 / math.sqrt(0.935) - 0.1 * 2.0 / math.sqrt(
        0.9 * 0.925 + 0.1 * 4.0 + 0.01), abs=1e-6)
    q = torch.nn.Parameter(torch.tensor([1.0, -2.0]))
    torch_opt = torch.optim.RMSprop([q], lr=lr, alpha=alpha, eps=eps)
    q.grad = grads[0].clone()
    torch_opt.step()
    assert abs(1.0 - q[0].item()) > 2.5 * 0.1 * 0.5 / math.sqrt(0.935)


def test_rmsprop_tf_matches_sb3_rmsprop_tf_like():
    sb3 = pytest.importorskip("stable_baselines3.common.sb2_compat.rmsprop_tf_like")
    from rlkit2.optim import RMSpropTF

    for kwargs in ({}, {"momentum": 0.9}, {"centered": True}):
        torch.manual_seed(0)
        a, b = torch.nn.Parameter(torch.randn(5, 3)), None
        b = torch.nn.Parameter(a.detach().clone())
        ours, theirs = RMSpropTF([a], lr=7e-4, alpha=0.99, eps=1e-5, **kwargs), \
            sb3.RMSpropTFLike([b], lr=7e-4, alpha=0.99, eps=1e-5, **kwargs)
        for _ in range(5):
            g = torch.randn(5, 3)
            a.grad, b.grad = g.clone(), g.clone()
            ours.step()
            theirs.step()
        assert torch.allclose(a, b, atol=1e-7), kwargs
