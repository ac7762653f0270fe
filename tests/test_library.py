"""The library API (import occystrap): docs/api.md's example runs as written, and the
calls behave as the CLI's commands do."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

import occystrap
from occystrap_core.testing.images import build_docker_archive

ROOT = Path(__file__).resolve().parents[1]


def example() -> str:
    text = (ROOT / "docs" / "api.md").read_text()
    return re.search(r"```python\n(.*?)```", text, re.DOTALL).group(1)  # type: ignore[union-attr]


def test_the_documented_example_runs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                     capsys: pytest.CaptureFixture[str]) -> None:
    built = build_docker_archive(str(tmp_path / "busybox.tar"), name="busybox", tag="latest",
                                 n_layers=2, seed=80)
    monkeypatch.chdir(tmp_path)
    exec(compile(example(), "docs/api.md", "exec"), {})
    out = capsys.readouterr().out
    assert "Error: " in out and "missing.tar" in out
    info = occystrap.inspect("oci-layout://./layout?ref=busybox")
    assert [l["diff_id"] for l in info["layers"]] == built["diff_ids"]
    assert sorted(os.listdir(tmp_path)) == ["busybox.tar", "layout", "slim.tar"]


def test_copy_reports_what_it_did(tmp_path: Path) -> None:
    build_docker_archive(str(tmp_path / "in.tar"), name="example.com/lib/app", tag="v1",
                         n_layers=3, seed=81)
    result = occystrap.copy(f"tar://{tmp_path / 'in.tar'}", f"oci-layout://{tmp_path / 'out'}")
    assert result.ok and result.problems == []
    assert result.stats["layers"] == 3 and result.stats["bytes"] > 0
    again = occystrap.copy(f"tar://{tmp_path / 'in.tar'}", f"oci-layout://{tmp_path / 'out'}",
                           verify=False)
    assert again.problems is None and again.manifest_digest == result.manifest_digest
    with occystrap.session() as session:
        report = occystrap.check(f"oci-layout://{tmp_path / 'out'}", session=session)
        assert report.count("error") == 0
        with pytest.raises(occystrap.OccystrapError, match="pass options to session"):
            occystrap.check(f"oci-layout://{tmp_path / 'out'}", session=session, fast=True,
                            insecure=True)
    with pytest.raises(occystrap.OccystrapError, match="unknown option colour"):
        occystrap.copy("tar://x", "tar://y", colour=True)


def test_python_dash_m_occystrap(tmp_path: Path) -> None:
    build_docker_archive(str(tmp_path / "in.tar"), n_layers=1, seed=82)
    result = subprocess.run([sys.executable, "-m", "occystrap", "info", "-O", "json",
                             f"tar://{tmp_path / 'in.tar'}"], capture_output=True, text=True,
                            timeout=60)
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["layer_count"] == 1
    version = subprocess.run([sys.executable, "-m", "occystrap", "--version"],
                             capture_output=True, text=True, timeout=60)
    assert version.stdout.startswith(f"occystrap {occystrap.__version__}")


def test_one_name_given_as_a_string(tmp_path: Path) -> None:
    """``ops.tag(uri, "stable")`` gives one tag, not one a letter; a filter named
    alone is taken whole too (a str is a sequence of letters)."""
    from occystrap import ops

    build_docker_archive(str(tmp_path / "in.tar"), n_layers=1, seed=83)
    layout = f"oci-layout://{tmp_path / 'layout'}"
    occystrap.copy(f"tar://{tmp_path / 'in.tar'}", f"{layout}?ref=v1")
    assert [d["tag"] for d in ops.tag(f"{layout}?ref=v1", "stable")] == ["stable"]
    assert ops.tags(layout) == ["stable", "v1"]
    slim = occystrap.copy(f"{layout}?ref=v1", f"tar://{tmp_path / 'slim.tar'}",
                          filters="normalize-timestamps")
    assert slim.ok


def test_stats_are_those_of_the_call(tmp_path: Path) -> None:
    """A session's counters add up every call's: each CopyResult counts its own copy."""
    build_docker_archive(str(tmp_path / "in.tar"), n_layers=2, seed=84)
    with occystrap.session() as session:
        first, second = (occystrap.copy(f"tar://{tmp_path / 'in.tar'}",
                                        f"tar://{tmp_path / name}", session=session)
                         for name in ("a.tar", "b.tar"))
        assert first.stats["layers"] == second.stats["layers"] == 2
        assert first.stats["bytes"] == second.stats["bytes"] > 0
        assert session.stats["layers"] == 4



def test_an_opened_source_keeps_its_platform(tmp_path: Path) -> None:
    """``platform=`` picks for that call: a source from open_source() passed to
    ops.config or ops.export is not left picking that platform for the next call."""
    from occystrap import ops
    from occystrap_core.testing.images import multi_platform_blobs, sample_image, write_files

    images = [sample_image(tag="v1", seed=1),
              sample_image(tag="v1", seed=2, architecture="arm64", variant="v8")]
    files, _ = multi_platform_blobs(images, "v1")
    write_files(str(tmp_path / "l"), files)
    with occystrap.session(platform="linux/amd64") as session, \
            occystrap.open_source(f"oci-layout://{tmp_path / 'l'}?ref=v1",
                                  session=session) as source:
        picked = [json.loads(ops.config(source, platform=p, session=session))["architecture"]
                  for p in ("linux/arm64", None)]
        ops.export(source, str(tmp_path / "arm.tar"), platform="linux/arm64", session=session)
        assert occystrap.inspect(source, session=session)["architecture"] == "amd64"
    assert picked == ["arm64", "amd64"]


def test_copy_referrers_into_a_tar_is_refused(tmp_path: Path) -> None:
    """As ``copy(referrers=True)``: one clear error, not an output's class name."""
    build_docker_archive(str(tmp_path / "in.tar"), n_layers=1, seed=85)
    layout = f"oci-layout://{tmp_path / 'layout'}?ref=v1"
    occystrap.copy(f"tar://{tmp_path / 'in.tar'}", layout)
    for call in (lambda: occystrap.copy_referrers(layout, f"tar://{tmp_path / 'x.tar'}"),
                 lambda: occystrap.copy(layout, f"tar://{tmp_path / 'x.tar'}",
                                        referrers=True)):
        with pytest.raises(occystrap.OccystrapError, match="x.tar cannot hold referrers"):
            call()
    assert sorted(os.listdir(tmp_path)) == ["in.tar", "layout"]

