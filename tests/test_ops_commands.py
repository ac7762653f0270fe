"""The registry operation commands (tags, catalog, manifest, config, digest, tag,
delete, export) against the real CNCF registry (plain and token auth) and OCI
layouts, with skopeo (and umoci for export) as the witnesses."""

from __future__ import annotations

import dataclasses
import hashlib
import io
import json
import os
import subprocess
import tarfile
import uuid
from pathlib import Path
from typing import Any, Callable, Iterator

import pytest
from click.testing import Result

from occystrap_core.testing.images import (
    multi_platform_blobs,
    sample_image,
    write_files,
    write_oci_layout,
)
from occystrap_core.testing.registry import (
    RegistryServer,
    push_sample_image,
    serve_registry,
    skopeo_args,
)

Run = Callable[..., Result]
Skopeo = Callable[..., str]


@pytest.fixture(params=["plain", "token"])
def server(request: pytest.FixtureRequest) -> RegistryServer:
    return request.getfixturevalue(f"registry_{request.param}")  # type: ignore[no-any-return]


@pytest.fixture(scope="module")
def logged(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RegistryServer]:
    """A plain registry of its own, logging requests, to count them."""
    yield from serve_registry("plain", tmp_path_factory, access_log=True)


@pytest.fixture(scope="module")
def no_deletes(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RegistryServer]:
    """A plain registry without storage.delete.enabled: every DELETE answers 405."""
    yield from serve_registry("plain", tmp_path_factory, deletes=False)


def flags(server: RegistryServer) -> list[str]:
    """The global options reaching ``server`` as its default user."""
    if server.ca_cert is None:
        return ["--insecure"]
    return ["--ca-cert", server.ca_cert, "--username", server.username or "",
            "--password", server.password or ""]


def repo() -> str:
    return f"ops/r{uuid.uuid4().hex[:10]}"


def ok(result: Result) -> Result:
    assert result.exit_code == 0, result.output
    return result


def skopeo_raw(skopeo: Skopeo, server: RegistryServer, ref: str, *extra: str) -> bytes:
    """``skopeo inspect --raw`` as bytes (the fixture decodes text)."""
    out = subprocess.run(["skopeo", "--insecure-policy", "inspect", "--raw", *extra,
                          *skopeo_args(server), f"docker://{server.host}/{ref}"],
                         capture_output=True, timeout=60)
    assert out.returncode == 0, out.stderr
    return out.stdout


def push_index(server: RegistryServer, ref: str, tmp_path: Path) -> tuple[bytes, dict[str, str]]:
    """A two-platform image pushed with ``skopeo copy --all``: the index, and each
    platform's manifest digest."""
    images = [sample_image(tag="v1", seed=1), sample_image(tag="v1", seed=2,
                                                           architecture="arm64", variant="v8")]
    files, index = multi_platform_blobs(images, "v1")
    layout = tmp_path / f"index-{uuid.uuid4().hex[:6]}"
    write_files(str(layout), files)
    subprocess.run(["skopeo", "--insecure-policy", "copy", "--all", "--preserve-digests",
                    *skopeo_args(server, "dest"), f"oci:{layout}:v1",
                    f"docker://{server.host}/{ref}"], check=True, capture_output=True,
                   timeout=60)
    entries = json.loads(index)["manifests"]
    return index, {e["platform"]["architecture"]: e["digest"] for e in entries}


# --- tags and catalog ----------------------------------------------------------

def test_tags_match_skopeo(server: RegistryServer, run_cli: Run, skopeo: Skopeo) -> None:
    name = repo()
    for t in ("v1.0", "v1.1", "v2.0", "latest"):
        push_sample_image(server, name, t)
    uri = f"registry://{server.host}/{name}"
    listed = ok(run_cli(*flags(server), "tags", uri)).stdout.split()
    witness = json.loads(skopeo("list-tags", *skopeo_args(server),
                                f"docker://{server.host}/{name}"))["Tags"]
    assert listed == sorted(witness) == ["latest", "v1.0", "v1.1", "v2.0"]
    filtered = json.loads(ok(run_cli(*flags(server), "tags", "-O", "json", "--filter", "v1.*",
                                     f"{uri}:latest")).stdout)
    assert filtered == {"repository": f"{uri}:latest", "tags": ["v1.0", "v1.1"]}


def test_catalog_reads_every_page(server: RegistryServer, run_cli: Run) -> None:
    names = sorted(repo() for _ in range(3))
    for name in names:
        push_sample_image(server, name)
    # one repository a page: the answer is only whole if every Link was followed
    result = ok(run_cli(*flags(server), "catalog", "-O", "json",
                        f"registry://{server.host}?page_size=1"))
    found = json.loads(result.stdout)["repositories"]
    assert set(names) <= set(found) and found == sorted(found)
    assert set(names) <= set(ok(run_cli(*flags(server), "catalog", server.host)).stdout.split())


def test_catalog_follows_links(logged: RegistryServer, run_cli: Run) -> None:
    names = sorted(repo() for _ in range(3))
    for name in names:
        push_sample_image(logged, name)
    before = len(logged.requests())
    found = ok(run_cli("--insecure", "catalog", f"registry://{logged.host}?page_size=2")
               ).stdout.split()
    pages = [r for r in logged.requests()[before:] if r.startswith("GET /v2/_catalog")]
    assert set(names) <= set(found) and found == sorted(found)
    assert len(pages) >= (len(found) + 1) // 2  # two a page: every Link followed


# --- manifest, config, digest ----------------------------------------------------

def test_manifest_config_digest_match_skopeo(server: RegistryServer, run_cli: Run,
                                             skopeo: Skopeo) -> None:
    name = repo()
    pushed = push_sample_image(server, name, "v1")
    uri = f"registry://{server.host}/{name}:v1"
    manifest = ok(run_cli(*flags(server), "manifest", uri)).stdout_bytes
    assert manifest == skopeo_raw(skopeo, server, f"{name}:v1") == pushed.manifest
    config = ok(run_cli(*flags(server), "config", uri)).stdout_bytes
    assert config == skopeo_raw(skopeo, server, f"{name}:v1", "--config")
    assert hashlib.sha256(config).hexdigest() == pushed.config_digest.split(":")[1]
    assert ok(run_cli(*flags(server), "digest", uri)).stdout.strip() == pushed.manifest_digest
    shown = json.loads(ok(run_cli(*flags(server), "manifest", "-O", "json", uri)).stdout)
    assert shown["digest"] == pushed.manifest_digest
    assert shown["manifest"] == json.loads(pushed.manifest)


def test_index_and_platforms(server: RegistryServer, run_cli: Run, skopeo: Skopeo,
                             tmp_path: Path) -> None:
    name = repo()
    index, by_arch = push_index(server, f"{name}:multi", tmp_path)
    uri = f"registry://{server.host}/{name}:multi"
    assert ok(run_cli(*flags(server), "manifest", uri)).stdout_bytes == index \
        == skopeo_raw(skopeo, server, f"{name}:multi")
    index_digest = "sha256:" + hashlib.sha256(index).hexdigest()
    assert ok(run_cli(*flags(server), "digest", uri)).stdout.strip() == index_digest
    arm = ok(run_cli(*flags(server), "manifest", "--platform", "linux/arm64", uri)).stdout_bytes
    assert arm == skopeo_raw(skopeo, server, f"{name}@{by_arch['arm64']}")
    assert json.loads(ok(run_cli(*flags(server), "digest", "-O", "json", "--platform",
                                 "linux/arm64/v8", uri)).stdout) == {"digest": by_arch["arm64"]}
    # the global --platform picks too
    assert ok(run_cli(*flags(server), "--platform", "linux/amd64", "digest", uri)
              ).stdout.strip() == by_arch["amd64"]
    config = ok(run_cli(*flags(server), "config", "--platform", "linux/arm64", uri)).stdout_bytes
    assert json.loads(config)["architecture"] == "arm64"
    rootfs = ok(run_cli(*flags(server), "export", "--platform", "linux/arm64", uri, "-"))
    with tarfile.open(fileobj=io.BytesIO(rootfs.stdout_bytes)) as tar:
        motd = tar.extractfile("etc/layer0.txt")
        assert motd is not None and motd.read() == b"layer 0 of seed 2\n"  # the arm64 one


# --- tag and delete ------------------------------------------------------------

def test_tag_is_one_manifest_put_per_tag(logged: RegistryServer, run_cli: Run,
                                         skopeo: Skopeo) -> None:
    name = repo()
    pushed = push_sample_image(logged, name, "v1")
    before = len(logged.requests())
    result = ok(run_cli("--insecure", "tag", f"registry://{logged.host}/{name}:v1",
                        "stable", "prod", "stable"))  # a tag named twice is written once
    assert f"registry://{logged.host}/{name}:stable ({pushed.manifest_digest})" in result.stdout
    assert result.stdout.count(":stable") == 1, result.stdout
    requests = logged.requests()[before:]
    assert [r for r in requests if r.startswith("PUT")] == [
        f"PUT /v2/{name}/manifests/stable", f"PUT /v2/{name}/manifests/prod"]
    assert not [r for r in requests if "/blobs/" in r]  # no blob asked about, none moved
    assert [r for r in requests if r.startswith("GET")] == [f"GET /v2/{name}/manifests/v1"]
    for t in ("stable", "prod"):
        assert skopeo_raw(skopeo, logged, f"{name}:{t}") == pushed.manifest


def test_tag_and_delete(server: RegistryServer, run_cli: Run, skopeo: Skopeo,
                        expect_error: Callable[..., None]) -> None:
    name = repo()
    pushed = push_sample_image(server, name, "v1")
    other = push_sample_image(server, name, "other", layers=[{"other": b"another image\n"}])
    uri = f"registry://{server.host}/{name}"
    done = json.loads(ok(run_cli(*flags(server), "tag", "-O", "json", f"{uri}:v1",
                                 "a", "b")).stdout)
    assert [d["tag"] for d in done] == ["a", "b"]
    assert {d["digest"] for d in done} == {pushed.manifest_digest}

    # distribution 2.8 deletes manifests, not tags: said so, with the way out
    refused = run_cli(*flags(server), "delete", f"{uri}:a")
    expect_error(refused, "cannot delete a tag alone", "--manifest")
    assert len(refused.stderr.splitlines()) == 1

    gone = json.loads(ok(run_cli(*flags(server), "delete", "--manifest", "-O", "json",
                                 f"{uri}:a")).stdout)
    assert gone["digest"] == pushed.manifest_digest and gone["tags"] == ["a", "b", "v1"]
    left = json.loads(skopeo("list-tags", *skopeo_args(server), f"docker://{server.host}/{name}"))
    assert left["Tags"] == ["other"]
    assert skopeo_raw(skopeo, server, f"{name}:other") == other.manifest
    expect_error(run_cli(*flags(server), "delete", "--manifest", f"{uri}:v1"), "no such image")


def test_delete_where_deletes_are_disabled(no_deletes: RegistryServer, run_cli: Run,
                                           expect_error: Callable[..., None]) -> None:
    """Where the registry deletes nothing, a tag delete says so: --manifest, the way out
    where only tags cannot be deleted, would be refused too."""
    name = repo()
    push_sample_image(no_deletes, name, "v1")
    uri = f"registry://{no_deletes.host}/{name}:v1"
    for args in ((), ("--manifest",)):
        refused = run_cli("--insecure", "delete", *args, uri)
        expect_error(refused, "does not allow deletes", "storage.delete.enabled")
        assert "--manifest" not in refused.stderr
        assert len(refused.stderr.splitlines()) == 1
    assert ok(run_cli("--insecure", "tags", uri)).stdout.split() == ["v1"]


def test_bad_input(server: RegistryServer, run_cli: Run, tmp_path: Path,
                   expect_error: Callable[..., None]) -> None:
    name = repo()
    push_sample_image(server, name, "v1")
    uri = f"registry://{server.host}/{name}"
    for command in ("manifest", "config", "digest"):
        expect_error(run_cli(*flags(server), command, f"{uri}:missing"), "missing")
    expect_error(run_cli(*flags(server), "tags", f"registry://{server.host}/Bad//Name"))
    expect_error(run_cli(*flags(server), "tag", f"{uri}:v1", "bad/tag"), "not a tag")
    expect_error(run_cli(*flags(server), "catalog", f"{server.host}/x"), "registry host")
    out = tmp_path / "rootfs.tar"
    expect_error(run_cli(*flags(server), "export", f"{uri}:missing", str(out)))
    assert os.listdir(tmp_path) == []


# --- OCI layouts ----------------------------------------------------------------

def test_layout_operations(tmp_path: Path, run_cli: Run, skopeo: Skopeo,
                           expect_error: Callable[..., None]) -> None:
    layout = tmp_path / "layout"
    write_oci_layout(str(layout), [sample_image(tag="v1"), sample_image(tag="v2", seed=2)],
                     ["v1", "v2"])
    uri = f"oci-layout://{layout}"
    assert ok(run_cli("tags", uri)).stdout.split() == ["v1", "v2"]
    manifest = ok(run_cli("manifest", f"{uri}?ref=v1")).stdout_bytes
    assert manifest.decode() == skopeo("inspect", "--raw", f"oci:{layout}:v1")
    assert ok(run_cli("config", f"{uri}?ref=v1")).stdout == \
        skopeo("inspect", "--config", "--raw", f"oci:{layout}:v1")
    digest = ok(run_cli("digest", f"{uri}?ref=v1")).stdout.strip()
    assert digest == "sha256:" + hashlib.sha256(manifest).hexdigest()

    ok(run_cli("tag", f"{uri}?ref=v1", "v3", "v4"))
    assert ok(run_cli("tags", uri)).stdout.split() == ["v1", "v2", "v3", "v4"]
    assert skopeo("inspect", "--raw", f"oci:{layout}:v3").encode() == manifest
    ok(run_cli("delete", f"{uri}?ref=v3"))
    assert ok(run_cli("tags", uri)).stdout.split() == ["v1", "v2", "v4"]
    gone = ok(run_cli("delete", "--manifest", f"{uri}?ref=v4")).stdout
    assert gone.strip() == f"Deleted manifest {digest}; tags gone: v1, v4"
    assert ok(run_cli("tags", uri)).stdout.split() == ["v2"]
    expect_error(run_cli("delete", f"{uri}?ref=v1"), "no image 'v1'")


def test_layout_by_digest(tmp_path: Path, run_cli: Run, skopeo: Skopeo,
                          expect_error: Callable[..., None]) -> None:
    """``oci-layout://DIR@DIGEST`` names a manifest as ``registry://HOST/REPO@DIGEST``
    does: it can be tagged (even once no ref lists it: its blob stays) and deleted
    with --manifest, index.json rewritten whole; it is no ref to delete or write to."""
    layout = tmp_path / "layout"
    write_oci_layout(str(layout), [sample_image(tag="v1"), sample_image(tag="v2", seed=2)],
                     ["v1", "v2"])
    uri = f"oci-layout://{layout}"
    manifest = ok(run_cli("manifest", f"{uri}?ref=v1")).stdout_bytes
    digest = "sha256:" + hashlib.sha256(manifest).hexdigest()
    named = f"{uri}@{digest}"
    assert ok(run_cli("digest", named)).stdout.strip() == digest

    ok(run_cli("tag", named, "v3"))
    assert skopeo("inspect", "--raw", f"oci:{layout}:v3").encode() == manifest
    umoci = ["umoci", "ls", "--layout", str(layout)]
    listed = subprocess.run(umoci, check=True, capture_output=True, text=True, timeout=60)
    assert sorted(listed.stdout.split()) == ["v1", "v2", "v3"]

    expect_error(run_cli("delete", named), "names no ref to delete", "--manifest")
    gone = ok(run_cli("delete", "--manifest", named)).stdout
    assert gone.strip() == f"Deleted manifest {digest}; tags gone: v1, v3"
    listed = subprocess.run(umoci, check=True, capture_output=True, text=True, timeout=60)
    assert listed.stdout.split() == ["v2"]
    index = json.loads((layout / "index.json").read_text())
    assert digest not in [e["digest"] for e in index["manifests"]]
    expect_error(run_cli("delete", "--manifest", named), f"lists no {digest}")

    ok(run_cli("tag", named, "back"))  # the blob is still there
    assert skopeo("inspect", "--raw", f"oci:{layout}:back").encode() == manifest

    before = sorted(p.name for p in (layout / "blobs" / "sha256").iterdir())
    expect_error(run_cli("process", f"{uri}?ref=v2", named), "not a ref to write to")
    expect_error(run_cli("manifest", f"{named}?ref=v2"), "give no ?ref=")
    missing = f"{uri}@sha256:{'0' * 64}"
    expect_error(run_cli("tag", missing, "v4"), "is missing")
    assert sorted(p.name for p in (layout / "blobs" / "sha256").iterdir()) == before
    assert ok(run_cli("tags", uri)).stdout.split() == ["back", "v2"]


def test_layout_index_digest(tmp_path: Path, run_cli: Run) -> None:
    images = [sample_image(tag="v1", seed=1),
              sample_image(tag="v1", seed=2, architecture="arm64", variant="v8")]
    files, index = multi_platform_blobs(images, "v1")
    write_files(str(tmp_path / "l"), files)
    uri = f"oci-layout://{tmp_path / 'l'}?ref=v1"
    assert ok(run_cli("manifest", uri)).stdout_bytes == index
    arm = json.loads(index)["manifests"][1]["digest"]
    assert ok(run_cli("digest", "--platform", "linux/arm64", uri)).stdout.strip() == arm


# --- export ---------------------------------------------------------------------

LAYERS: list[dict[str, bytes | str]] = [
    {"etc/passwd": "root:x:0:0\n", "etc/motd": "hello\n", "opt/app/old.txt": "old\n",
     "opt/app/keep/k": "kept? no\n", "var/lib/a": "a\n", "var/lib/b": "b\n",
     "home/user/.profile": "p\n"},
    {"etc/motd": "updated\n", "etc/.wh.passwd": "", "opt/app/.wh..wh..opq": "",
     "opt/app/new.txt": "new\n", "var/lib/c": "c\n", "home/.wh.user": ""},
    {"var/lib/.wh.a": "", "opt/app/top.txt": "top\n", "home/user/fresh": "again\n",
     "etc/motd": "final\n"},
]


def _tree(root: Path) -> dict[str, Any]:
    """path -> content (files) or "dir", as extracted."""
    found: dict[str, Any] = {}
    for base, dirs, files in os.walk(root):
        for d in dirs:
            found[os.path.relpath(os.path.join(base, d), root)] = "dir"
        for f in files:
            found[os.path.relpath(os.path.join(base, f), root)] = \
                Path(base, f).read_bytes()
    return found


def _extract(data: bytes, into: Path) -> dict[str, Any]:
    with tarfile.open(fileobj=io.BytesIO(data)) as tar:
        assert not [m.name for m in tar if ".wh." in m.name]
        tar.extractall(into, filter="data")
    return _tree(into)


def test_export_applies_whiteouts(tmp_path: Path, run_cli: Run, registry_plain: RegistryServer,
                                  skopeo: Skopeo) -> None:
    layout = tmp_path / "layout"
    write_oci_layout(str(layout), [sample_image(tag="v1", layers=LAYERS)], ["v1"])
    uri = f"oci-layout://{layout}?ref=v1"
    out = tmp_path / "rootfs.tar"
    result = ok(run_cli("export", uri, str(out)))
    assert "from 3 layers" in result.stderr
    exported = _extract(out.read_bytes(), tmp_path / "exported")
    assert exported == {
        "etc": "dir", "etc/motd": b"final\n", "opt": "dir", "opt/app": "dir",
        "opt/app/new.txt": b"new\n", "opt/app/top.txt": b"top\n", "var": "dir",
        "var/lib": "dir", "var/lib/b": b"b\n", "var/lib/c": b"c\n", "home": "dir",
        "home/user": "dir", "home/user/fresh": b"again\n"}

    # the same tree as the core's extractor and umoci make
    ok(run_cli("process", uri, f"dir://{tmp_path / 'dir'}?expand=true"))
    assert _tree(tmp_path / "dir" / "rootfs") == exported
    subprocess.run(["umoci", "raw", "unpack", "--rootless", "--image", f"{layout}:v1",
                    str(tmp_path / "umoci")], check=True, capture_output=True, timeout=60)
    assert _tree(tmp_path / "umoci") == exported

    # from a registry, to stdout: the same bytes
    name = repo()
    skopeo("copy", *skopeo_args(registry_plain, "dest"), f"oci:{layout}:v1",
           f"docker://{registry_plain.host}/{name}:v1")
    streamed = ok(run_cli("--insecure", "export", f"registry://{registry_plain.host}/{name}:v1",
                          "-")).stdout_bytes
    assert streamed == out.read_bytes()


def test_export_refuses_hostile_names_and_leaves_nothing(tmp_path: Path, run_cli: Run,
                                                         expect_error: Callable[..., None]
                                                         ) -> None:
    image = sample_image(tag="v1", layers=[{"ok/file": "fine\n"}, {"ok/.wh..": ""}])
    write_oci_layout(str(tmp_path / "layout"), [image], ["v1"])
    out = tmp_path / "out" / "rootfs.tar"
    out.parent.mkdir()
    expect_error(run_cli("export", f"oci-layout://{tmp_path / 'layout'}?ref=v1", str(out)),
                 "refused")
    assert os.listdir(out.parent) == []


def test_export_into_a_missing_directory(tmp_path: Path, run_cli: Run,
                                        expect_error: Callable[..., None]) -> None:
    """Said as ``process`` says it, before anything is read; the library raises an
    OccystrapError with that message, not the OSError of a temporary file."""
    import occystrap
    from occystrap import ops

    write_oci_layout(str(tmp_path / "layout"), [sample_image(tag="v1")], ["v1"])
    uri = f"oci-layout://{tmp_path / 'layout'}?ref=v1"
    out = tmp_path / "no" / "rootfs.tar"
    result = run_cli("export", uri, str(out))
    expect_error(result, f"directory {out.parent} does not exist")
    assert ".tmp" not in result.stderr
    with pytest.raises(occystrap.OccystrapError, match="does not exist"):
        ops.export(uri, str(out))
    assert sorted(os.listdir(tmp_path)) == ["layout"]


def test_export_to_a_file_named_with_spaces(tmp_path: Path, run_cli: Run,
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    """Spaces are a file name like any other; only "" names no file."""
    write_oci_layout(str(tmp_path / "layout"), [sample_image(tag="v1")], ["v1"])
    (tmp_path / "out").mkdir()
    monkeypatch.chdir(tmp_path / "out")
    ok(run_cli("export", f"oci-layout://{tmp_path / 'layout'}?ref=v1", "  "))
    assert os.listdir(tmp_path / "out") == ["  "]
    with tarfile.open(tmp_path / "out" / "  ") as tar:
        assert tar.getnames()


def test_credentials_in_the_uri_never_show(registry_token: RegistryServer, run_cli: Run,
                                           expect_error: Callable[..., None]) -> None:
    name = repo()
    push_sample_image(registry_token, name, "v1")
    ca = ["--ca-cert", registry_token.ca_cert or ""]
    uri = f"registry://alice:alice-secret@{registry_token.host}/{name}"
    for args in (("tags", "-O", "json", uri), ("tag", "-O", "json", f"{uri}:v1", "v2"),
                 ("tag", f"{uri}:v1", "v3"), ("delete", "-O", "json", f"{uri}:v2")):
        result = run_cli(*ca, *args)
        assert "alice-secret" not in result.output
    assert json.loads(run_cli(*ca, "tags", "-O", "json", uri).stdout)["tags"] == [
        "v1", "v2", "v3"]
    wrong = run_cli(*ca, "tags", f"registry://alice:not-her-secret@{registry_token.host}/{name}")
    expect_error(wrong)
    assert "not-her-secret" not in wrong.output


def test_sources_without_manifests_say_so(tmp_path: Path, run_cli: Run,
                                          expect_error: Callable[..., None]) -> None:
    from occystrap_core.testing.images import write_docker_archive

    write_docker_archive(str(tmp_path / "image.tar"), [sample_image(tag="v1")])
    uri = f"tar://{tmp_path / 'image.tar'}"
    expect_error(run_cli("manifest", uri), "without manifests")
    expect_error(run_cli("tags", uri), "tar")
    config = ok(run_cli("config", uri)).stdout_bytes
    assert config == sample_image(tag="v1").config  # a docker-save archive still has one


def test_delete_tag_where_the_registry_can(registry_plain: RegistryServer, run_cli: Run,
                                           fault_front_factory: Callable[..., Any],
                                           expect_error: Callable[..., None]) -> None:
    """A registry deleting tags (distribution 3, as the spec has it) answers 202: the
    front plays one, distribution 2.8 behind it holding the image."""
    from occystrap_core.testing.faults import Fault

    name = repo()
    push_sample_image(registry_plain, name, "v1")
    front = fault_front_factory(registry_plain)
    front.add(Fault("status", method="DELETE", path=f"/{name}/manifests/v1$", status=202))
    result = ok(run_cli("--insecure", "delete", f"registry://{front.host}/{name}:v1"))
    assert result.stdout.strip() == f"Deleted tag registry://{front.host}/{name}:v1"
    assert front.injected() == 1
    # distribution 2.8 refuses any tag (400): one it does not have is said to be missing
    expect_error(run_cli("--insecure", "delete", f"registry://{front.host}/{name}:nope"),
                 "no such tag")


def test_by_digest(server: RegistryServer, run_cli: Run, skopeo: Skopeo) -> None:
    """``REPO@DIGEST`` names a repository too: its tags, and the manifest to delete (the
    way the refusal to delete a digest's tag points to)."""
    name = repo()
    pushed = push_sample_image(server, name, "v1")
    push_sample_image(server, name, "other", layers=[{"other": b"another image\n"}])
    ok(run_cli(*flags(server), "tag", f"registry://{server.host}/{name}:v1", "v2"))
    uri = f"registry://{server.host}/{name}@{pushed.manifest_digest}"
    assert ok(run_cli(*flags(server), "tags", uri)).stdout.split() == ["other", "v1", "v2"]
    gone = json.loads(ok(run_cli(*flags(server), "delete", "--manifest", "-O", "json",
                                 uri)).stdout)
    assert gone["digest"] == pushed.manifest_digest and gone["tags"] == ["v1", "v2"]
    left = json.loads(skopeo("list-tags", *skopeo_args(server), f"docker://{server.host}/{name}"))
    assert left["Tags"] == ["other"]


def test_delete_where_the_registry_allows_none(registry_plain: RegistryServer, run_cli: Run,
                                               fault_front_factory: Callable[..., Any],
                                               expect_error: Callable[..., None]) -> None:
    """CNCF distribution answers every DELETE with 405 UNSUPPORTED unless its storage
    allows deletes (the default): the front plays that, and a registry that refuses
    only a tag's DELETE with 405. The tag's refusal points to --manifest only where
    a manifest's DELETE is not refused too; that refusal says why, not a bare status."""
    from occystrap_core.testing.faults import Fault

    name = repo()
    push_sample_image(registry_plain, name, "v1")
    front = fault_front_factory(registry_plain)
    refuse = Fault("status", method="DELETE", path=f"/{name}/manifests/", status=405,
                   code="UNSUPPORTED")
    uri = f"registry://{front.host}/{name}:v1"
    front.add(refuse)  # the tag's DELETE only
    expect_error(run_cli("--insecure", "delete", uri), "cannot delete a tag alone",
                 "--manifest")
    front.add(dataclasses.replace(refuse, times=3))  # every DELETE
    for args in ((), ("--manifest",)):
        refused = run_cli("--insecure", "delete", *args, uri)
        expect_error(refused, "does not allow deletes", "storage.delete.enabled")
        assert "--manifest" not in refused.stderr
    assert front.injected() == 4
    assert ok(run_cli("--insecure", "tags", uri)).stdout.split() == ["v1"]

