"""docs/plugins.md followed literally: its files make a plugin that installs and works."""

from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest

DOC = Path(__file__).parents[1] / "docs" / "plugins.md"
_BLOCK = re.compile(r"<!-- (file: (?P<path>\S+)|run) -->\n```\w*\n(?P<body>.*?)```", re.DOTALL)


def _blocks() -> tuple[dict[str, str], list[str]]:
    """The doc's files by path, and the commands of its run block."""
    files: dict[str, str] = {}
    commands: list[str] = []
    for m in _BLOCK.finditer(DOC.read_text()):
        if m["path"]:
            files[m["path"]] = m["body"]
        else:
            commands += [line.split("#")[0].strip() for line in m["body"].splitlines()]
    return files, [c for c in commands if c]


def test_the_doc_names_every_file_of_its_tree() -> None:
    files, commands = _blocks()
    assert set(files) == {"pyproject.toml", "src/occystrap_acme/__init__.py",
                          "src/occystrap_acme/plugin.py", "src/occystrap_acme/source.py"}
    assert 'version = "' in files["pyproject.toml"]
    assert commands[0] == "pip install ."


@pytest.mark.slow
def test_the_documented_plugin_installs_and_copies_an_image(tmp_path: Path) -> None:
    files, commands = _blocks()
    project = tmp_path / "occystrap-acme"
    for path, body in files.items():
        (project / path).parent.mkdir(parents=True, exist_ok=True)
        (project / path).write_text(body)
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--system-site-packages", "--without-pip",
                    str(venv)], check=True, timeout=120)
    python = str(venv / "bin" / "python")
    env = {k: v for k, v in os.environ.items() if not k.startswith("OCCYSTRAP_")}
    outputs = []
    for command in commands:  # as typed, but offline and with the venv's python
        words = shlex.split(command)
        if words[:2] == ["pip", "install"]:
            words = ["-m", "pip", "install", "-q", "--no-deps", "--no-build-isolation",
                     *words[2:]]
        else:
            assert words[0] == "occystrap", command
            words = ["-m", "occystrap_core", *words[1:]]
        done = subprocess.run([python, *words], cwd=project, env=env, capture_output=True,
                              text=True, timeout=300)
        assert done.returncode == 0, f"{command}\n{done.stderr}"
        outputs.append(done.stdout)
    listed, helped = outputs[1], outputs[2]
    assert "occystrap-acme (occystrap-acme 0.1.0) active" in listed
    assert re.search(r"acme://\s+Images from the Acme store \[occystrap-acme\]", helped)

    with tarfile.open(project / "hello.tar") as archive:
        [manifest] = json.load(archive.extractfile("manifest.json"))
        assert manifest["RepoTags"] == ["acme.example/tools/hello:latest"]
        layer = archive.extractfile(manifest["Layers"][0])
        assert layer is not None
        with tarfile.open(fileobj=layer) as files_of_layer:
            hello = files_of_layer.extractfile("hello.txt")
            assert hello is not None and hello.read() == b"hello from hello (tools)\n"
