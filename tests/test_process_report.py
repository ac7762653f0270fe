"""What ``process`` tells scripts (stdout, ``-O json``, ``--digestfile``) and what
``check -O json`` prints whatever happens."""

from __future__ import annotations

import hashlib
import json
import subprocess
from pathlib import Path
from typing import Any

import pytest

from occystrap_core import mediatypes as mt
from occystrap_core.testing.images import build_docker_archive
from occystrap_core.testing.registry import RegistryServer, push_sample_image, skopeo_args


def _raw_digest(*skopeo_ref: str) -> str:
    raw = subprocess.run(["skopeo", "inspect", "--raw", *skopeo_ref], capture_output=True,
                         check=True, timeout=60).stdout
    return "sha256:" + hashlib.sha256(raw).hexdigest()


def test_process_prints_destination_at_digest(tmp_path: Path, run_cli: Any) -> None:
    archive = build_docker_archive(str(tmp_path / "in.tar"))["path"]
    out = tmp_path / "out.tar"
    result = run_cli("process", f"tar://{archive}", f"tar://{out}")
    assert result.exit_code == 0, result.output
    digest = _raw_digest(f"oci-archive:{out}")  # the tar is an OCI archive too
    assert result.stdout == f"tar://{out}@{digest}\n"
    assert "Wrote " in result.stderr and "Summary: " in result.stderr  # as before


def test_process_json_and_digestfile_on_a_registry(registry_plain: RegistryServer,
                                                   tmp_path: Path, run_cli: Any) -> None:
    host = registry_plain.host
    sample = push_sample_image(registry_plain, "habits/src", "v1")
    digestfile = tmp_path / "digest"
    target = f"registry://{host}/habits/dst:v1"
    args = ("process", f"registry://{host}/habits/src:v1", target, "--insecure",
            "-O", "json", "--digestfile", str(digestfile))
    result = run_cli(*args)
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report == {
        "destination": target, "location": f"registry://{host}/habits/dst:v1",
        "manifest_digest": sample.manifest_digest, "media_type": mt.OCI_MANIFEST,
        "bytes": 0, "blobs": {"copied": 0, "skipped": 0, "mounted": 2},  # same registry
        "verified": True, "problems": [],
    }
    assert digestfile.read_text() == sample.manifest_digest  # no newline, as skopeo's
    witness = tmp_path / "skopeo-digest"
    subprocess.run(["skopeo", "--insecure-policy", "copy", "--digestfile", str(witness),
                    *skopeo_args(registry_plain, "src"), *skopeo_args(registry_plain, "dest"),
                    f"docker://{host}/habits/src:v1", f"docker://{host}/habits/witness:v1"],
                   check=True, capture_output=True, timeout=60)
    assert witness.read_bytes() == digestfile.read_bytes()

    again = json.loads(run_cli(*args).stdout)  # warm: the destination has it all
    assert again["blobs"] == {"copied": 0, "skipped": 2, "mounted": 0}
    assert again["manifest_digest"] == sample.manifest_digest
    pulled = run_cli("process", "--insecure", target, f"tar://{tmp_path / 'back.tar'}",
                     "--output-format=json", "--no-verify")
    assert pulled.exit_code == 0, pulled.output
    back = json.loads(pulled.stdout)
    assert back["blobs"]["copied"] == 2 and back["bytes"] > 0
    assert back["verified"] is None and back["problems"] is None


def test_a_digestfile_that_cannot_be_written_fails_first(tmp_path: Path, run_cli: Any,
                                                        expect_error: Any) -> None:
    archive = build_docker_archive(str(tmp_path / "in.tar"))["path"]
    out = tmp_path / "out.tar"
    result = run_cli("process", f"tar://{archive}", f"tar://{out}",
                     "--digestfile", str(tmp_path / "nowhere" / "digest"))
    expect_error(result, "--digestfile", "no directory")
    assert not out.exists() and result.stdout == ""
    # dir:// writes no manifest digest: the copy is done, the digest file is not
    result = run_cli("process", f"tar://{archive}", f"dir://{tmp_path / 'dir'}",
                     "--digestfile", str(tmp_path / "digest"))
    assert result.exit_code == 1 and "Traceback" not in result.stderr
    assert result.stderr.splitlines()[-1] == (f"Error: dir://{tmp_path / 'dir'} has no "
                                              f"manifest digest for --digestfile")
    assert not (tmp_path / "digest").exists()


def test_bulk_process_reports_each_image(registry_plain: RegistryServer, tmp_path: Path,
                                         run_cli: Any) -> None:
    host = registry_plain.host
    pushed = {name: push_sample_image(registry_plain, f"habits-bulk/{name}", "v1")
              for name in ("one", "two")}
    template = f"registry://{host}/mirror/{{repo}}:v1"
    result = run_cli("--insecure", "process", f"registry://{host}/habits-bulk/*:v1", template,
                     "-O", "json")
    assert result.exit_code == 0, result.output
    reports = {r["source"]: r for r in json.loads(result.stdout)}
    assert len(reports) == 2
    for name, sample in pushed.items():
        report = reports[f"registry://{host}/habits-bulk/{name}:v1?insecure=true"]
        assert report["manifest_digest"] == sample.manifest_digest
        assert report["destination"] == f"registry://{host}/mirror/habits-bulk/{name}:v1"
        assert report["media_type"] == mt.OCI_MANIFEST and report["verified"] is True
    text = run_cli("--insecure", "process", f"registry://{host}/habits-bulk/*:v1", template)
    assert text.exit_code == 0, text.output
    assert sorted(text.stdout.splitlines()) == [
        f"registry://{host}/mirror/habits-bulk/{name}:v1@{sample.manifest_digest}"
        for name, sample in sorted(pushed.items())]


@pytest.mark.parametrize("source, fragment", [
    ("tar://{tmp}/missing.tar", "does not exist"),
    ("registry://u:s3cret-pw@127.0.0.1:9/app:v1", "127.0.0.1:9"),  # nothing listens there
    ("registry://127.0.0.1:9/UPPER:v1", "UPPER"),  # a malformed reference
    ("nosuch://x", "unknown input scheme"),
])
def test_check_json_reports_errors_as_json(tmp_path: Path, run_cli: Any, source: str,
                                           fragment: str) -> None:
    uri = source.format(tmp=tmp_path)
    result = run_cli("--retries", "0", "check", uri, "-O", "json")
    assert result.exit_code == 1, result.output
    report = json.loads(result.stdout)
    assert report["errors"] == 1 and report["image"] == uri.replace("s3cret-pw", "REDACTED")
    [found] = report["results"]
    assert found["severity"] == "error" and found["check"] == "open"
    assert fragment in found["message"]
    assert "s3cret-pw" not in result.output
    assert result.stderr.startswith("Error: ") and fragment in result.stderr  # for people
    text = run_cli("--retries", "0", "check", uri)  # text: the one Error line, as before
    assert text.exit_code == 1 and text.stdout == ""
    assert text.stderr.startswith("Error: ") and "s3cret-pw" not in text.stderr


def test_check_json_of_a_sound_image(tmp_path: Path, run_cli: Any) -> None:
    archive = build_docker_archive(str(tmp_path / "in.tar"))["path"]
    result = run_cli("-O", "json", "check", f"tar://{archive}")
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["errors"] == 0


def test_the_json_report_names_no_secret(registry_basic: RegistryServer, tmp_path: Path,
                                         run_cli: Any) -> None:
    archive = build_docker_archive(str(tmp_path / "in.tar"))["path"]
    creds = f"{registry_basic.username}:{registry_basic.password}"
    target = f"registry://{creds}@{registry_basic.host}/habits/secret:v1"
    result = run_cli("process", f"tar://{archive}", target, "--ca-cert",
                     str(registry_basic.ca_cert), "-O", "json")
    assert result.exit_code == 0, result.output
    assert str(registry_basic.password) not in result.output
    report = json.loads(result.stdout)
    assert report["destination"] == (f"registry://{registry_basic.username}:REDACTED@"
                                     f"{registry_basic.host}/habits/secret:v1")
    assert report["blobs"]["copied"] == 2
