"""The documentation: the site builds with warnings as errors, the config reference matches the schema, every page is
in the nav, and the commands and Python examples marked runnable (a ``<!-- test -->`` line right before the fenced
block) run as written, in an empty folder beside a link to ``configs/``."""

import importlib.util
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from conftest import ROOT

DOCS = ROOT / "docs"
RUNNABLE = re.compile(r"^<!-- test -->\n```(bash|python)\n(.*?)^```$", re.MULTILINE | re.DOTALL)


def runnable_blocks(page: Path) -> list[tuple[str, str]]:
    """``(language, code)`` of each block of ``page`` marked runnable, in order."""
    return RUNNABLE.findall(page.read_text(encoding="utf-8"))


def trains(page: Path) -> bool:
    """A page whose runnable commands train a model starts several TensorFlow processes (about a minute of CPU):
    it runs in the slow tier, while the quick pages keep the runner itself in the default tier."""
    return any(language == "bash" and "mtl train" in code for language, code in runnable_blocks(page))


PAGES_WITH_COMMANDS = [pytest.param(p.name, marks=[pytest.mark.slow] if trains(p) else [])
                       for p in sorted(DOCS.glob("*.md")) if runnable_blocks(p)]


def test_the_guides_have_runnable_examples():
    pages = {param.values[0]: bool(param.marks) for param in PAGES_WITH_COMMANDS}
    assert pages.get("getting-started.md") is True  # runs in the slow tier
    assert pages.get("index.md") is False and pages.get("extending.md") is False  # quick: the default tier


@pytest.mark.parametrize("name", PAGES_WITH_COMMANDS)
def test_runnable_blocks_run_as_written(name, tmp_path, monkeypatch):
    blocks = runnable_blocks(DOCS / name)
    (tmp_path / "configs").symlink_to(ROOT / "configs")
    path = f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"  # mtl and python of this venv
    env = {**os.environ, "PYTHONPATH": str(ROOT), "PATH": path}
    namespace: dict = {}
    monkeypatch.chdir(tmp_path)
    for number, (language, code) in enumerate(blocks, 1):
        if language == "bash":
            done = subprocess.run(["bash", "-euo", "pipefail", "-c", code], cwd=tmp_path, env=env,
                                  capture_output=True, text=True, timeout=300)
            assert done.returncode == 0, f"{name}, block {number}:\n{code}\n{done.stdout}\n{done.stderr}"
        else:
            exec(compile(code, f"{name} block {number}", "exec"), namespace)  # noqa: S102  the page's own example


def test_config_reference_is_generated_from_the_current_schema():
    spec = importlib.util.spec_from_file_location("gen_config_reference", DOCS / "gen_config_reference.py")
    generator = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(generator)
    assert (DOCS / "config-reference.md").read_text(encoding="utf-8") == generator.config_reference(), (
        "docs/config-reference.md is stale: run python docs/gen_config_reference.py")


def test_the_reference_names_every_task_type_and_feature_kind():
    from mtl.features import FEATURE_KINDS
    from mtl.tasks import TASK_TYPES

    text = (DOCS / "config-reference.md").read_text(encoding="utf-8")
    assert all(f"(type: {name})" in text for name in TASK_TYPES)
    assert all(f"`data.features.{kind}`" in text for kind in FEATURE_KINDS)


def nav_pages(node) -> list[str]:
    if isinstance(node, str):
        return [node]
    if isinstance(node, dict):
        return [p for value in node.values() for p in nav_pages(value)]
    return [p for item in node for p in nav_pages(item)]


def test_every_page_is_in_the_nav_and_every_nav_entry_exists():
    nav = nav_pages(yaml.safe_load((ROOT / "mkdocs.yml").read_text())["nav"])
    pages = sorted(p.name for p in DOCS.glob("*.md"))
    assert sorted(nav) == pages, "add the page to nav in mkdocs.yml (or remove the entry)"


def test_site_builds_with_warnings_as_errors(tmp_path):
    done = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(tmp_path / "site")],
                          cwd=ROOT, capture_output=True, text=True, timeout=300,
                          env={**os.environ, "NO_MKDOCS_2_WARNING": "1"})
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "site" / "config-reference" / "index.html").is_file()


def test_readme_is_short_keeps_the_ci_command_and_links_pages_that_exist():
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    assert "make test" in text  # the command CI runs
    assert len(text.splitlines()) < 150
    links = re.findall(r"\]\((docs/[^)#]+)", text)
    assert links and all((ROOT / link).is_file() for link in links)
