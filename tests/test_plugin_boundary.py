"""Plugins import only the core's public API (occystrap_core.PUBLIC_MODULES), never
another plugin, never a private name; and the public modules exist."""

from __future__ import annotations

import ast
import importlib
import re
from pathlib import Path

import pytest

import occystrap_core
from occystrap_core import PUBLIC_MODULES

ROOT = Path(__file__).resolve().parents[1]
PLUGINS = {p.name: p for p in sorted((ROOT / "plugins").iterdir()) if (p / "src").is_dir()}
_LAZY = re.compile(r"""lazy\(\s*["']([\w.]+):""")


def package_of(plugin: Path) -> str:
    (package,) = [p.name for p in (plugin / "src").iterdir()
                  if (p / "__init__.py").is_file()]
    return package


def imports(path: Path) -> list[tuple[int, str, list[str]]]:
    """(line, module, names) of every absolute import in ``path``, and of every module
    a ``lazy("module:attr")`` factory names."""
    found: list[tuple[int, str, list[str]]] = []
    text = path.read_text()
    for node in ast.walk(ast.parse(text)):
        if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.append((node.lineno, node.module, [a.name for a in node.names]))
        elif isinstance(node, ast.Import):
            found += [(node.lineno, a.name, []) for a in node.names]
    for match in _LAZY.finditer(text):
        found.append((text.count("\n", 0, match.start()) + 1, match.group(1), []))
    return found


def violations(plugin: Path) -> list[str]:
    own = package_of(plugin)
    others = {package_of(p) for p in PLUGINS.values()} - {own}
    problems = []
    for path in sorted((plugin / "src").rglob("*.py")):
        where = path.relative_to(plugin.parent.parent)
        for line, module, names in imports(path):
            top = module.split(".")[0]
            if top in others:
                problems.append(f"{where}:{line}: imports another plugin: {module}")
            elif top == "occystrap_core":
                if module == "occystrap_core":  # its public names, or public modules
                    public = all(n in occystrap_core.__all__
                                 or f"occystrap_core.{n}" in PUBLIC_MODULES for n in names)
                else:
                    public = module in PUBLIC_MODULES
                if not public:
                    problems.append(f"{where}:{line}: imports private {module} {names or ''}")
                problems += [f"{where}:{line}: imports the private name {module}.{n}"
                             for n in names if n.startswith("_")]
    return problems


@pytest.mark.parametrize("name", sorted(PLUGINS))
def test_plugins_import_only_the_public_api(name: str) -> None:
    assert violations(PLUGINS[name]) == []


def test_the_check_finds_what_it_must(tmp_path: Path) -> None:
    plugin = tmp_path / "plugins" / "bad"
    (plugin / "src" / "occystrap_bad").mkdir(parents=True)
    (plugin / "src" / "occystrap_bad" / "__init__.py").write_text("")
    (plugin / "src" / "occystrap_bad" / "x.py").write_text(
        "from occystrap_core.pipeline import run\n"
        "from occystrap_core import bulk\n"
        "from occystrap_core.api import _Source\n"
        "from occystrap_tarball.inputs import open_tar\n"
        "F = lazy('occystrap_core.outputs.directory:DirectoryOutput')\n"
        "from occystrap_core.oci.reference import parse\n")
    PLUGINS["bad"] = plugin
    try:
        found = violations(plugin)
    finally:
        del PLUGINS["bad"]
    assert [p.split(": ", 1)[1].split(" ")[0:2] for p in found] == [
        ["imports", "private"], ["imports", "private"], ["imports", "the"],
        ["imports", "another"], ["imports", "private"]]


@pytest.mark.parametrize("module", PUBLIC_MODULES)
def test_every_public_module_exists(module: str) -> None:
    importlib.import_module(module)
