"""Every message that sends the reader to a README section names a heading README.md has."""

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
# "README, 'Heading'", "README.md, \"Heading\"", "README section 'Heading'"
REFERENCE = re.compile(r"""README(?:\.md)?,?\s*(?:section\s*)?(['"])(.+?)\1""")


def readme_headings() -> set[str]:
    headings, in_code = set(), False
    for line in (ROOT / "README.md").read_text().splitlines():
        in_code ^= line.startswith("```")  # a '# comment' inside a code block is no heading
        if line.startswith("#") and not in_code:
            headings.add(line.lstrip("#").strip())
    return headings


def readme_mentions() -> list[tuple[str, str]]:
    mentions = []
    for folder in ("rlkit2", "envs", "agents", "scripts"):
        for path in sorted((ROOT / folder).rglob("*")):
            if path.suffix not in (".py", ".toml", ".sh") or "__pycache__" in path.parts:
                continue
            for number, line in enumerate(path.read_text().splitlines(), 1):
                if "README" in line:
                    mentions.append((f"{path.relative_to(ROOT)}:{number}", line))
    return mentions


def test_every_readme_section_reference_names_an_existing_heading():
    headings = readme_headings()
    mentions = readme_mentions()
    assert mentions, "expected at least one README reference to check"
    for where, line in mentions:
        found = REFERENCE.findall(line)
        assert found, f"{where}: a README mention should name its section, as README, 'Heading': {line.strip()}"
        for _, heading in found:
            assert heading in headings, f"{where}: README has no heading '{heading}'; it has: {sorted(headings)}"


def test_the_headings_and_the_pattern_read_the_forms_used():
    assert "2. Plug in custom gymnasium envs" in readme_headings()
    assert not any(h.startswith("checkpoint:") for h in readme_headings())  # a shell comment in a code block
    assert REFERENCE.findall("see README, '2. Plug in custom gymnasium envs')") == [
        ("'", "2. Plug in custom gymnasium envs")]
    assert REFERENCE.findall('README.md section "Quickstart"')[0][1] == "Quickstart"
