"""The documentation: the site builds with warnings as errors, the config reference matches the schema, every page is
in the nav, and every shell block either runs in the tests (``<!-- test -->``, see ``docs_pages.py``) or says why it
cannot run here (``<!-- not run: reason -->``: a second host, a Docker image, the set-up CI does itself). The pages
whose examples train models run from ``test_docs_serving.py``, ``test_docs_guides.py`` and ``test_docs_data.py``;
the quick ones run here."""

import importlib.util
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from conftest import ROOT
from docs_pages import DOCS, PAGE_GROUPS, PAGES, run_page, runnable_blocks, trains

QUICK_PAGES = [p.name for p in PAGES if runnable_blocks(p) and not trains(p)]


def test_every_page_that_trains_is_run_by_one_group():
    grouped = [name for names in PAGE_GROUPS.values() for name in names]
    assert len(grouped) == len(set(grouped))
    assert sorted(grouped) == sorted(p.name for p in PAGES if trains(p))
    assert {"index.md", "extending.md"} <= set(QUICK_PAGES)


@pytest.mark.parametrize("name", QUICK_PAGES)
def test_quick_pages_run_as_written(name, tmp_path):
    run_page(name, tmp_path)


def shell_blocks(page: Path) -> list[tuple[str, str]]:
    """``(line before the fence, first line of the block)`` of each shell block of ``page``."""
    lines = page.read_text(encoding="utf-8").splitlines()
    return [(lines[i - 1] if i else "", lines[i + 1] if i + 1 < len(lines) else "")
            for i, line in enumerate(lines) if re.fullmatch(r"```(bash|sh|shell|console)", line.strip())]


def test_every_shell_block_runs_or_says_why_not():
    """A command a reader copies has been run by the tests, or the page says why it cannot be run here."""
    unmarked = [f"{page.name}: {first}" for page in PAGES
                for before, first in shell_blocks(page)
                if before != "<!-- test -->" and not re.fullmatch(r"<!-- not run: \S.* -->", before)]
    assert not unmarked, "mark these blocks <!-- test --> or <!-- not run: reason -->:\n" + "\n".join(unmarked)


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
