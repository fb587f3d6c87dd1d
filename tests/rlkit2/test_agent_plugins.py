"""Agents by entry point (rlkit2/agent.py): the built-in agents and plug-in packages through the same group, found
lazily, with one-line errors for a name two packages claim and for a plug-in that fails to load. Plug-ins here are
fake installed distributions (a *.dist-info folder with entry_points.txt) on a temporary sys.path entry; the real
example package is installed and trained in tests/scripts/test_command.py."""

import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from conftest import subprocess_env
from rlkit2 import agent as registry
from rlkit2.agent import AgentPluginError, AgentSpec, agent_names, get_agent_spec
from rlkit2.cli import main_train
from rlkit2.commands import main as rlkit2_main

ROOT = Path(__file__).resolve().parents[2]
BUILT_IN = ["a2c", "agac", "dsac", "ppo", "pref", "vpn"]


def fresh_discovery():
    registry._declared.cache_clear()
    registry._load.cache_clear()


@pytest.fixture
def site(tmp_path, monkeypatch):
    """A folder on sys.path where fake_distribution() 'installs' packages; discovery starts afresh."""
    monkeypatch.syspath_prepend(str(tmp_path))
    fresh_discovery()
    yield tmp_path
    fresh_discovery()


def fake_distribution(site: Path, name: str, agents: dict[str, str], modules: dict[str, str] = {}) -> None:
    info = site / f"{name.replace('-', '_')}-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text("[rlkit2.agents]\n" + "".join(f"{k} = {v}\n" for k, v in agents.items()))
    for module, code in modules.items():
        (site / f"{module}.py").write_text(code)


SPEC_MODULE = """from agents.ppo import OnPolicyConfig, build
from rlkit2.agent import AgentSpec
SPEC = AgentSpec({name!r}, OnPolicyConfig, build, None, "a plug-in")
"""


def test_the_built_in_agents_are_the_pyproject_entry_points_and_load_by_name():
    declared = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["entry-points"]["rlkit2.agents"]
    assert sorted(declared) == BUILT_IN
    assert declared["ppo"].split(":")[0] == declared["a2c"].split(":")[0] == "agents.ppo"  # one module, two agents
    assert [n for n in agent_names() if n in BUILT_IN] == BUILT_IN
    for name in BUILT_IN:
        spec = get_agent_spec(name)
        assert isinstance(spec, AgentSpec) and spec.name == name and spec.preset.is_file()


def test_no_import_cycle_and_only_the_asked_agent_is_imported():
    code = ("import sys, rlkit2.agent, rlkit2.run, rlkit2.cli\n"
            "assert not [m for m in sys.modules if m == 'agents' or m.startswith('agents.')], 'agents imported'\n"
            "rlkit2.agent.get_agent_spec('dsac')\n"
            "print(sorted(m for m in sys.modules if m.startswith('agents.')))\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=subprocess_env(),
                         timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "['agents.dsac']"


def test_a_plug_in_adds_an_agent_by_name(site):
    fake_distribution(site, "extra-agents", {"extra": "extra_mod:SPEC"}, {"extra_mod": SPEC_MODULE.format(name="extra")})
    assert "extra" in agent_names() and "extra_mod" not in sys.modules  # naming the agents imports none
    assert get_agent_spec("extra").description == "a plug-in" and "extra_mod" in sys.modules


def test_a_name_two_packages_claim_is_an_error_naming_both(site, capsys):
    fake_distribution(site, "pkg-one", {"twin": "twin_one:SPEC"})
    fake_distribution(site, "pkg-two", {"twin": "twin_two:SPEC", "ppo": "twin_two:SPEC"})
    with pytest.raises(AgentPluginError, match=r"Agent 'twin' is claimed by two packages: pkg-(one|two) "
                                               r"\(twin_(one|two):SPEC\) and pkg-(one|two) .* uninstall one"):
        get_agent_spec("twin")
    with pytest.raises(AgentPluginError, match=r"Agent 'ppo' is claimed by two packages: rlkit2 "
                                               r"\(agents.ppo:PPO_SPEC\) and pkg-two \(twin_two:SPEC\)"):
        get_agent_spec("ppo")
    assert get_agent_spec("dsac").name == "dsac"  # other names are unaffected
    assert main_train(["--agent", "twin", "--env", "CartPole-v1"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("error: Agent 'twin' is claimed by two packages")


def test_a_plug_in_that_fails_to_import_is_an_error_naming_it_and_its_exception(site, capsys):
    fake_distribution(site, "broken-agent", {"broken": "broken_mod:SPEC"},
                      {"broken_mod": "import rlkit2_no_such_dependency\n"})
    fake_distribution(site, "fine-agent", {"fine": "fine_mod:SPEC"}, {"fine_mod": SPEC_MODULE.format(name="fine")})
    message = (r"Agent plug-in 'broken' \(broken_mod:SPEC, from package broken-agent\) failed to load: "
               r"ModuleNotFoundError: No module named 'rlkit2_no_such_dependency' — fix or reinstall that package, "
               r"or uninstall it \(pip uninstall broken-agent\)")
    with pytest.raises(AgentPluginError, match=message):
        get_agent_spec("broken")
    assert main_train(["--agent", "broken", "--env", "CartPole-v1"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Traceback" not in err and "No module named 'rlkit2_no_such_dependency'" in err
    # the listings show every agent that works, then say which one does not (exit code 2)
    assert rlkit2_main(["list"]) == 2
    captured = capsys.readouterr()
    assert "fine" in captured.out and "ppo" in captured.out and "broken" in captured.out
    assert captured.err.startswith("error: Agent plug-in 'broken'")
    assert main_train(["--list"]) == 2 and "fine" in capsys.readouterr().out


@pytest.mark.parametrize("target,message", [
    ("odd_mod:NOT_A_SPEC", r"Agent plug-in 'odd' \(odd_mod:NOT_A_SPEC, from package odd-agent\) is a dict, not an "
                           r"rlkit2.agent.AgentSpec"),
    ("odd_mod:SPEC", r"is an AgentSpec named 'other' — the entry point's name and AgentSpec.name must be the same"),
    ("odd_mod:MISSING", r"failed to load: AttributeError: module 'odd_mod' has no attribute 'MISSING'"),
])
def test_an_entry_point_that_names_no_fitting_spec_is_an_error(site, target, message):
    fake_distribution(site, "odd-agent", {"odd": target},
                      {"odd_mod": SPEC_MODULE.format(name="other") + "NOT_A_SPEC = {}\n"})
    with pytest.raises(AgentPluginError, match=message):
        get_agent_spec("odd")


def test_an_installed_rlkit2_reads_its_metadata_and_a_checkout_its_pyproject(site, monkeypatch):
    """From a checkout the pyproject.toml beside the package is the declaration, and an install's (possibly
    stale) rlkit2 metadata is not read as a second claim; an installed rlkit2 (no pyproject.toml) reads its
    metadata."""
    fake_distribution(site, "rlkit2", {"ppo": "agents.ppo:PPO_SPEC", "only_in_metadata": "agents.ppo:PPO_SPEC"})
    assert "only_in_metadata" not in agent_names() and get_agent_spec("ppo").name == "ppo"
    monkeypatch.setattr(registry, "_CHECKOUT_PYPROJECT", site / "no" / "pyproject.toml")
    fresh_discovery()
    assert "only_in_metadata" in agent_names() and "dsac" not in agent_names()  # what this metadata declares
    assert get_agent_spec("ppo").name == "ppo"


def test_an_unknown_agent_lists_the_declared_ones(site):
    fake_distribution(site, "extra-agents", {"extra": "extra_mod:SPEC"})
    with pytest.raises(ValueError, match=r"Unknown agent 'dqn'. Available agents: a2c, agac, dsac, extra, ppo"):
        get_agent_spec("dqn")
