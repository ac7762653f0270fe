"""docs/migrating.md: every 0.4.17 command line in its ``console`` blocks runs, in order,
and prints the lines written under it.

The lines run against the session's plain-HTTP registry (so ``--insecure`` is added
before the command, as a 0.4.17 user of such a registry would type it) and the Podman
daemon the docker plugin's tests use, in a fresh directory where the earlier lines'
files are.
"""

from __future__ import annotations

import importlib.util
import json
import re
import shlex
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from occystrap_core.cli import LAZY_COMMANDS
from occystrap_core.testing.images import build_docker_archive
from occystrap_core.testing.registry import RegistryServer, push_sample_image, skopeo_args

GUIDE = Path(__file__).parents[1] / "docs" / "migrating.md"


def _docker_fixtures() -> Any:
    path = Path(__file__).parents[1] / "plugins" / "docker" / "tests" / "conftest.py"
    spec = importlib.util.spec_from_file_location("occystrap_docker_test_fixtures", path)
    assert spec is not None and spec.loader is not None
    module = sys.modules[spec.name] = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


podman = _docker_fixtures().podman  # the daemon the docker plugin's tests use


def examples() -> list[tuple[str, list[str]]]:
    """Each ``$ ...`` line of the guide's console blocks and the lines printed under it."""
    found: list[tuple[str, list[str]]] = []
    for block in re.findall(r"^```console\n(.*?)^```", GUIDE.read_text(), re.M | re.S):
        for line in block.splitlines():
            if line.startswith("$ "):
                found.append((line[2:], []))
            else:
                found[-1][1].append(line)
    return found


def test_the_guide_covers_every_deprecated_command() -> None:
    typed = [shlex.split(line) for line, _ in examples()]
    used = {word for words in typed for word in words}
    deprecated = {n for n, t in LAZY_COMMANDS.items() if t.startswith("occystrap_core.legacy:")}
    assert deprecated <= used
    assert len(deprecated) == 12
    text = GUIDE.read_text()
    for name in ("OCCYSTRAP_COMPRESSION", "OCCYSTRAP_LAYER_CACHE", "--output-format",
                 "oci://", "file://", "directory://", "?max_workers", "--rate-limit"):
        assert name in text


def test_every_0417_command_line_of_the_guide(registry_plain: RegistryServer, podman: Any,
                                              run_cli: Callable[..., Any], tmp_path: Path,
                                              monkeypatch: pytest.MonkeyPatch,
                                              skopeo: Callable[..., str]) -> None:
    repo = "migrating/guide"
    pushed = push_sample_image(registry_plain, repo, "v1")
    image = "example.com/migrating/app"
    build_docker_archive(str(tmp_path / "daemon.tar"), name=image, tag="v1", seed=21)
    podman.load(str(tmp_path / "daemon.tar"))
    values = {"$REGISTRY": registry_plain.host, "$REPO": repo, "$TAG": "v1", "$IMAGE": image,
              "$SOCKET": podman.socket}
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)

    def fill(text: str) -> str:
        for key, value in values.items():
            text = text.replace(key, value)
        return text

    ran = 0
    for line, printed in examples():
        words = shlex.split(fill(line))
        env = {}
        while "=" in words[0]:
            key, _, value = words.pop(0).partition("=")
            env[key] = value
        assert words.pop(0) == "occystrap", line
        result = run_cli("--insecure", *words, env=env)
        assert result.exit_code == 0, f"{line}\n{result.output}"
        assert "Traceback" not in result.output
        for expected in printed:
            assert fill(expected) in result.output, f"{line}\n{result.output}"
        ran += 1
    assert ran == len(examples()) >= 30

    # what the aliases wrote is the image, digests and all
    for archive in ("app.tar", "recreated.tar", "from-dir.tar"):
        config = json.loads(skopeo("inspect", "--config", f"docker-archive:{work / archive}"))
        assert config["rootfs"]["diff_ids"] == list(pushed.diff_ids), archive
    assert (work / "bundle" / "rootfs" / "etc" / "hello.txt").is_file()
    assert (work / "unique" / "catalog.json").is_file()
    assert (work / "docker-extracted" / "rootfs" / "etc" / "layer0.txt").is_file()
    for tag in ("zstd", "env"):
        manifest = json.loads(skopeo("inspect", "--raw", *skopeo_args(registry_plain),
                                     f"docker://{registry_plain.host}/{repo}-{tag}:v1"))
        assert {layer["mediaType"] for layer in manifest["layers"]} == \
            {"application/vnd.oci.image.layer.v1.tar+zstd"}
