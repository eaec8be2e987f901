"""Tests, benchmarks, the app and the notebook use only public names: no ``mtl`` module whose name starts with ``_``
is imported outside the package, and every name imported from a package is in its ``__all__``."""

from __future__ import annotations

import ast
import importlib
import json
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _sources() -> list[tuple[str, str]]:
    files = [*ROOT.glob("tests/**/*.py"), *ROOT.glob("benchmarks/*.py"), ROOT / "app.py", ROOT / "run_training.py"]
    sources = [(str(p.relative_to(ROOT)), p.read_text(encoding="utf-8")) for p in files]
    for notebook in ROOT.glob("notebooks/*.ipynb"):
        cells = json.loads(notebook.read_text(encoding="utf-8"))["cells"]
        code = "\n".join("".join(c["source"]) for c in cells if c["cell_type"] == "code")
        sources.append((str(notebook.relative_to(ROOT)), "\n".join(
            line for line in code.splitlines() if not line.lstrip().startswith(("%", "!")))))
    return sources


def _mtl_imports() -> list[tuple[str, str, list[str]]]:
    found = []
    for where, source in _sources():
        for node in ast.walk(ast.parse(source)):
            if isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] == "mtl":
                found.append((where, node.module, [a.name for a in node.names]))
            elif isinstance(node, ast.Import):
                found += [(where, a.name, []) for a in node.names if a.name.split(".")[0] == "mtl"]
    return found


def test_no_private_module_is_imported_outside_the_package():
    private = [(where, module) for where, module, _ in _mtl_imports()
               if any(part.startswith("_") for part in module.split("."))]
    assert not private, f"private mtl modules imported: {private}"


def test_names_imported_from_a_package_are_in_its_all():
    missing = []
    for where, module, names in _mtl_imports():
        package = importlib.import_module(module)
        exported = getattr(package, "__all__", None)
        for name in names:
            is_module = hasattr(package, "__path__") and importlib.util.find_spec(f"{module}.{name}") is not None
            if exported is not None and name not in exported and not is_module:
                missing.append((where, module, name))
    assert not missing, f"imported but not in __all__: {missing}"
