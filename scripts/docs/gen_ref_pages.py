"""mkdocs-gen-files script: one API reference page per module of rlkit2, envs and agents (from the docstrings, by
mkdocstrings), and the nav of that section (reference/SUMMARY.md, read by mkdocs-literate-nav). A new module gets
its page without editing anything here."""

from pathlib import Path

import mkdocs_gen_files

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("rlkit2", "envs", "agents")

nav = mkdocs_gen_files.Nav()
for package in PACKAGES:
    for path in sorted((ROOT / package).rglob("*.py")):
        parts = path.relative_to(ROOT).with_suffix("").parts
        if "__pycache__" in parts or parts[-1] == "__main__":
            continue
        if parts[-1] == "__init__":
            parts = parts[:-1]
            doc_path = Path(*parts, "index.md")
        else:
            doc_path = Path(*parts).with_suffix(".md")
        nav[parts] = doc_path.as_posix()
        with mkdocs_gen_files.open(Path("reference", doc_path), "w") as page:
            page.write(f"# `{'.'.join(parts)}`\n\n::: {'.'.join(parts)}\n")

with mkdocs_gen_files.open("reference/SUMMARY.md", "w") as summary:
    summary.writelines(nav.build_literate_nav())
