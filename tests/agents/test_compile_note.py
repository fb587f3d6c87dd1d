"""compile_loss: a line says why the first update takes long before torch.compile starts (issue 22)."""

import torch

from rlkit2.agent import get_agent_spec
from rlkit2.run import build_agent, make_env, resolve_config


def test_the_first_compile_is_announced_once(monkeypatch, capsys):
    calls = []

    def fake_compile(fn, **kwargs):  # the note is what is tested, not torch's compiler (30-60 s on a CPU)
        calls.append(fn)
        return fn

    monkeypatch.setattr(torch, "compile", fake_compile)
    run, cfg = resolve_config("ppo", "CartPole-v1", {"compile_loss": True, "num_envs": 2, "num_steps": 16,
                                                     "minibatch_size": 16, "epochs": 2})
    env = make_env(run, run.num_envs, 0, training=True)
    try:
        agent = build_agent(get_agent_spec("ppo"), run, cfg, env)
        agent.train_iteration()
        agent.train_iteration()
    finally:
        env.close()
    err = capsys.readouterr().err
    assert len(calls) == 1
    assert err.count("compiling the update step with torch.compile (about 10-60 s on a CPU, once per run; "
                     "--compile_loss false to skip, --rl.compile_loss false with --agent pref)") == 1
    assert err.count("compiled in ") == 1
