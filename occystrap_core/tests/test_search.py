"""The search filter and command, and the inspect filter."""

from __future__ import annotations

import json

import pytest

from occystrap_core.testing.images import (
    build_docker_archive,
    sample_image,
    write_oci_layout,
)

LAYERS = [{"etc/passwd": "root\n", "etc/motd": "hi\n"},
          {"usr/bin/tool": "#!/bin/sh\n", "etc/passwd-": "old\n"}]


@pytest.fixture
def archive(tmp_path):
    info = build_docker_archive(str(tmp_path / "src.tar"), layers=LAYERS)
    return f"tar://{info['path']}"


def test_search_command_glob(archive, run_cli):
    result = run_cli("search", archive, "passwd*")
    assert result.exit_code == 0, result.stderr
    assert "etc/passwd (file, 5 bytes)" in result.stdout
    assert "etc/passwd- (file, 4 bytes)" in result.stdout
    assert result.stdout.count("Layer: sha256:") == 2
    assert "Found 2 match(es) in 2 layer(s)." in result.stdout


def test_search_command_regex_script_friendly(archive, run_cli):
    result = run_cli("search", archive, r"^usr/.*tool$", "--regex", "--script-friendly")
    assert result.exit_code == 0, result.stderr
    (line,) = result.stdout.splitlines()
    assert line.startswith("example.com/demo/app:v1:sha256:") and line.endswith(":usr/bin/tool")


def test_search_regex_may_root_its_path_like_a_glob(archive, run_cli):
    # "/usr/bin/tool" is how the path reads inside a container: a regex anchored there
    # found nothing, when the same glob did
    for pattern, regex in ((r"^/usr/bin/.*$", True), (r"^usr/bin/.*$", True),
                           ("/usr/bin/*", False)):
        result = run_cli("search", archive, pattern, *(["--regex"] if regex else []))
        assert result.exit_code == 0, result.stderr
        assert "usr/bin/tool (file, 10 bytes)" in result.stdout, pattern
        assert "Found 1 match(es)" in result.stdout, pattern


def test_search_no_match(archive, run_cli):
    result = run_cli("search", archive, "nothing-like-this")
    assert result.exit_code == 0 and result.stdout.strip() == "No matches found."
    assert run_cli("search", archive, "nothing", "--script-friendly").stdout == ""


def test_search_filter_tees_compressed_layers_to_the_output(tmp_path, run_cli):
    write_oci_layout(str(tmp_path / "src"), [sample_image(layers=LAYERS)])  # gzip layers
    out = tmp_path / "copy"
    result = run_cli("-j", "2", "process", f"oci-layout://{tmp_path / 'src'}",
                     f"oci-layout://{out}", "-f", "search:pattern=/etc/motd")
    assert result.exit_code == 0, result.stderr
    assert "etc/motd (file, 3 bytes)" in result.stdout
    # passthrough: the blobs are copied byte for byte, the manifest is the source's
    src_index = json.loads((tmp_path / "src" / "index.json").read_text())
    out_index = json.loads((out / "index.json").read_text())
    assert src_index["manifests"][0]["digest"] == out_index["manifests"][0]["digest"]
    # the output already has every layer: the search still reads them
    again = run_cli("process", f"oci-layout://{tmp_path / 'src'}", f"oci-layout://{out}",
                    "-f", "search:pattern=motd")
    assert "etc/motd (file, 3 bytes)" in again.stdout


def test_search_reports_a_corrupt_layer(tmp_path, run_cli):
    write_oci_layout(str(tmp_path / "src"), [sample_image(layers=LAYERS)], compress=False)
    blobs = sorted((tmp_path / "src" / "blobs" / "sha256").iterdir(),
                   key=lambda p: p.stat().st_size)
    biggest = blobs[-1]
    biggest.write_bytes(biggest.read_bytes()[:600])
    result = run_cli("search", f"oci-layout://{tmp_path / 'src'}", "*")
    assert result.exit_code == 1 and result.stderr.startswith("Error:")


def test_inspect_appends_history_lines(archive, tmp_path, run_cli):
    log = tmp_path / "history.jsonl"
    for _ in range(2):
        result = run_cli("process", archive, f"tar://{tmp_path / 'o.tar'}",
                         "-f", f"inspect:file={log}")
        assert result.exit_code == 0, result.stderr
    lines = [json.loads(l) for l in log.read_text().splitlines()]
    assert len(lines) == 2
    record = lines[0]
    assert record["name"] == "example.com/demo/app:v1"
    top, bottom = record["layers"]
    assert top["Tags"] == ["example.com/demo/app:v1"] and bottom["Tags"] is None
    assert top["CreatedBy"].endswith("ADD layer 1") and bottom["Size"] > 0
    assert list(top) == sorted(top)
