"""The documentation site (mkdocs.yml): it builds with warnings as errors, its generated parts hold what the
repository says, and a broken reference fails the build. CI builds it here, once (`make test` installs the docs
extra); without mkdocs these tests are skipped."""

import importlib.util
import os
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

pytest.importorskip("mkdocs")
pytest.importorskip("mkdocstrings")

ROOT = Path(__file__).resolve().parents[2]
QUIET = {"NO_MKDOCS_2_WARNING": "1", "DISABLE_MKDOCS_2_WARNING": "true"}  # notices printed by the plug-ins


def load_hooks():
    spec = importlib.util.spec_from_file_location("rlkit2_docs_hooks", ROOT / "scripts" / "docs" / "hooks.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


hooks = load_hooks()


def build(config: Path, site: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "-f", str(config), "-d", str(site)],
                          cwd=ROOT, capture_output=True, text=True, timeout=300, env={**os.environ, **QUIET})


@pytest.fixture(scope="module")
def site(tmp_path_factory) -> Path:
    site = tmp_path_factory.mktemp("site")
    result = build(ROOT / "mkdocs.yml", site)
    assert result.returncode == 0, f"mkdocs build --strict failed:\n{result.stdout}\n{result.stderr}"
    return site


def text(site: Path, page: str) -> str:
    return (site / page / "index.html").read_text(encoding="utf-8")


def test_the_site_builds_strict_with_every_page_of_the_nav(site):
    for page in ("getting-started", "train", "custom-envs", "evaluate", "export", "envs", "agent_contract",
                 "sweeps", "remote_workers", "benchmarks", "agents/ppo", "agents/dsac", "agents/agac",
                 "agents/pref", "agents/vpn"):
        assert (site / page / "index.html").is_file(), page
    assert (site / "index.html").is_file()
    # the records beside the pages stay where the pages' links point
    assert (site / "bench" / "learning.jsonl").is_file() and (site / "ppo_mujoco_curves.png").is_file()


def test_every_module_has_an_api_reference_page(site):
    for package in ("rlkit2", "envs", "agents"):
        for path in (ROOT / package).glob("*.py"):
            if path.stem == "__main__":  # `python -m rlkit2`: no API of its own
                continue
            page = site / "reference" / package / ("" if path.stem == "__init__" else path.stem) / "index.html"
            assert page.is_file(), f"no API page for {package}.{path.stem}"
    # rendered from the docstrings: a function's and a config field's documentation appear
    assert "Return a copy of dataclass" in text(site, "reference/rlkit2/config")
    assert "Seed for torch/numpy/python RNGs" in text(site, "reference/rlkit2/run")


def test_agent_pages_show_generated_options_presets_and_included_benchmarks(site):
    ppo = text(site, "agents/ppo")
    assert "<code>--clip_eps</code>" in ppo and "<code>--action_handling</code>" in ppo
    assert "agents/presets/a2c.toml" in ppo and "rmsprop_tf" in ppo  # the a2c preset's optimizer
    assert "Clipping vs tanh squashing" in ppo and 'src="../../ppo_mujoco_curves.png"' in ppo
    dsac = text(site, "agents/dsac")
    assert "<code>--td_bound_sigmas</code>" in dsac and 'src="../../dsac_learning_curves.png"' in dsac
    assert "The official variant is refused at this budget" in dsac  # benchmarks.md's section, included


def test_include_takes_a_section_up_to_the_next_heading_of_its_level_and_skips_code():
    lines = ["# Top", "intro", "## A", "a text", "```", "# not a heading", "```", "### A.1", "sub", "## B", "b"]
    assert hooks.section(lines, "A") == lines[2:9]
    assert hooks.section(lines, "A", intro=True) == lines[2:7]
    assert hooks.shift_headings(hooks.section(lines, "A"), 1)[0] == "### A"
    assert hooks.shift_headings(hooks.section(lines, "A"), 1)[5] == "#### A.1"
    assert hooks.shift_headings(hooks.section(lines, "A"), 1)[3] == "# not a heading"  # inside the code block
    with pytest.raises(ValueError, match="no heading 'a'.*similar: \\['A', 'A.1'\\]"):
        hooks.section(lines, "a")


def test_include_rewrites_links_for_the_including_page():
    docs = ROOT / "docs"
    text_ = "see [bench](docs/benchmarks.md#throughput), ![c](docs/x.png), [site](https://a.b/c), [l](LICENSE)"
    rewritten = hooks.rewrite_links(text_, ROOT, docs / "agents", docs)
    assert rewritten == ("see [bench](../benchmarks.md#throughput), ![c](../x.png), [site](https://a.b/c), "
                         "l (`LICENSE`)")


def test_the_preset_table_holds_each_sections_values():
    preset = tomllib.loads((ROOT / "agents" / "presets" / "ppo.toml").read_text())
    sections = dict(hooks.preset_sections(preset))
    assert sections["all envs"]["clip_eps"] == preset["agent"]["clip_eps"]
    assert sections["atari envs"]["clip_eps"] == preset["atari"]["agent"]["clip_eps"]
    assert sections["Pendulum-v1"]["num_envs"] == preset["env"]["Pendulum-v1"]["run"]["num_envs"]
    assert "compile_loss" in sections["mujoco envs"] and "compile_loss" not in sections["all envs"]
    assert hooks.flatten({"rl": {"lr": 1, "atari": {"noop_max": 0}}, "x": {}}) == {
        "rl.lr": 1, "rl.atari.noop_max": 0, "x": {}}


def test_a_broken_reference_fails_the_build(tmp_path):
    (tmp_path / "docs").mkdir()
    (tmp_path / "docs" / "index.md").write_text('# Home\n\n<!-- rlkit2:include README.md "No such heading" -->\n')
    config = tmp_path / "mkdocs.yml"
    config.write_text(f"site_name: t\ndocs_dir: {tmp_path / 'docs'}\nhooks:\n  - {ROOT / 'scripts/docs/hooks.py'}\n")
    result = build(config, tmp_path / "site")
    assert result.returncode != 0
    assert "index.md: <!-- rlkit2:include README.md \"No such heading\" -->: no heading 'No such heading'" in (
        result.stdout + result.stderr)
    (tmp_path / "docs" / "index.md").write_text("# Home\n\n[gone](missing.md)\n")
    result = build(config, tmp_path / "site")
    assert result.returncode != 0 and "missing.md" in result.stdout + result.stderr
