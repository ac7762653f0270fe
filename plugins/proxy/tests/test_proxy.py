"""``occystrap proxy`` against the real registry, with real clients (skopeo, podman)."""

from __future__ import annotations

import base64
import dataclasses
import json
import os
import signal
import subprocess
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest

from occystrap_core.testing import images
from occystrap_core.testing.registry import (
    RegistryServer,
    User,
    push_sample_image,
    remove_image,
    skopeo_args,
    start_registry,
)

FILES = {"etc/motd": b"hello\n", "tmp/junk/cache.bin": b"x" * 4096, "usr/bin/tool": b"#!/bin/sh\n"}


def _layout(tmp_path: Path, tag: str = "v1", **kwargs: Any) -> Path:
    image = images.sample_image(tag=tag, layers=[FILES, {"etc/second": b"2\n"}], **kwargs)
    path = tmp_path / f"layout-{tag}"
    images.write_oci_layout(str(path), [image], [tag])
    return path


def _skopeo_to_proxy(skopeo: Callable[..., str], src: str, proxy: Any, ref: str) -> str:
    return skopeo("copy", "--all", "--dest-tls-verify=false", src, f"docker://{proxy.host}/{ref}")


def _pull_archive(skopeo: Callable[..., str], proxy: Any, ref: str, tmp_path: Path) -> Path:
    archive = tmp_path / f"pulled-{uuid.uuid4().hex}.tar"
    skopeo("copy", "--src-tls-verify=false", f"docker://{proxy.host}/{ref}",
           f"docker-archive:{archive}")
    return archive


def _pulled_files(skopeo: Callable[..., str], proxy: Any, ref: str, tmp_path: Path,
                  layer_members: Callable[[str], dict[str, Any]]) -> dict[str, Any]:
    return layer_members(str(_pull_archive(skopeo, proxy, ref, tmp_path)))


@pytest.fixture
def check_image(run_cli: Callable[..., Any], occy_args: Callable[..., list[str]]
                ) -> Callable[..., None]:
    def check(server: RegistryServer, ref: str, *args: str) -> None:
        result = run_cli(*occy_args(server), *args, "check", f"registry://{server.host}/{ref}")
        assert result.exit_code == 0, result.output

    return check


def test_push_through_filters_to_a_prefixed_downstream(
        registry_plain: RegistryServer, start_proxy: Callable[..., Any],
        skopeo: Callable[..., str], check_image: Callable[..., None],
        repo_name: Callable[[str], str],
        layer_members: Callable[[str], dict[str, Any]], tmp_path: Path) -> None:
    """skopeo pushes to the proxy; the downstream (HOST/PREFIX) gets the filtered image,
    and reads by tag through the proxy serve that same image."""
    prefix, repo = repo_name("org"), repo_name("app")
    proxy = start_proxy(registry_plain, "-d", f"{registry_plain.host}/{prefix}",
                        "-f", "normalize-timestamps", "-f", "exclude:pattern=tmp/junk")
    _skopeo_to_proxy(skopeo, f"oci:{_layout(tmp_path)}:v1", proxy, f"{repo}:v1")
    check_image(registry_plain, f"{prefix}/{repo}:v1")
    members = _pulled_files(skopeo, proxy, f"{repo}:v1", tmp_path, layer_members)
    assert "etc/motd" in members and "usr/bin/tool" in members
    assert not any(name.startswith("tmp/junk/") for name in members)
    assert {m.mtime for m in members.values()} == {0}
    pushes = proxy.events("push")
    assert [(e["repository"], e["ref"]) for e in pushes] == [(repo, "v1")]
    assert pushes[0]["destination"] == f"registry://{registry_plain.host}/{prefix}/{repo}:v1"
    assert proxy.stop() == 0
    assert proxy.events("stopped")[0]["signal"] == "SIGTERM"


def test_push_of_a_multi_platform_index(
        registry_plain: RegistryServer, start_proxy: Callable[..., Any],
        skopeo: Callable[..., str], check_image: Callable[..., None],
        repo_name: Callable[[str], str],
        layer_members: Callable[[str], dict[str, Any]], tmp_path: Path) -> None:
    repo = repo_name("multi")
    proxy = start_proxy(registry_plain, "-d", f"{registry_plain.host}/mirror",
                        "-f", "normalize-timestamps")
    layout = tmp_path / "multi"
    arches = [images.sample_image(tag="v1", architecture=a, seed=i)
              for i, a in enumerate(("amd64", "arm64"))]
    images.write_files(str(layout), images.multi_platform_blobs(arches, "v1")[0])
    _skopeo_to_proxy(skopeo, f"oci:{layout}:v1", proxy, f"{repo}:v1")
    raw = json.loads(skopeo("inspect", "--raw", *skopeo_args(registry_plain),
                            f"docker://{registry_plain.host}/mirror/{repo}:v1"))
    assert sorted(m["platform"]["architecture"] for m in raw["manifests"]) == ["amd64", "arm64"]
    for arch in ("amd64", "arm64"):
        check_image(registry_plain, f"mirror/{repo}:v1", "--platform", f"linux/{arch}")


def test_bad_pushes_are_refused_like_a_registry_refuses_them(
        registry_plain: RegistryServer, start_proxy: Callable[..., Any]) -> None:
    proxy = start_proxy(registry_plain, "-d", f"{registry_plain.host}/mirror")
    with httpx.Client(base_url=f"http://{proxy.host}") as client:
        assert client.get("/v2/").status_code == 200
        missing = {"schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
                   "config": {"mediaType": "application/vnd.oci.image.config.v1+json",
                              "digest": "sha256:" + "0" * 64, "size": 2}, "layers": []}
        response = client.put("/v2/app/manifests/v1", content=json.dumps(missing),
                              headers={"Content-Type": missing["mediaType"]})
        assert response.status_code == 400
        assert response.json()["errors"][0]["code"] == "MANIFEST_BLOB_UNKNOWN"
        start = client.post("/v2/app/blobs/uploads/")
        assert start.status_code == 202
        wrong = client.put(start.headers["Location"] + "?digest=sha256:" + "1" * 64,
                           content=b"data")
        assert wrong.json()["errors"][0]["code"] == "DIGEST_INVALID"
        assert client.get("/v2/../etc/passwd/manifests/x").status_code == 404
        # no referrers API: a 404 that does not say the repository is unknown, so
        # clients (oras-go, go-containerregistry) fall back to the referrers tag
        referrers = client.get("/v2/app/referrers/sha256:" + "3" * 64)
        assert referrers.status_code == 404
        assert referrers.json()["errors"][0]["code"] != "NAME_UNKNOWN"
        assert client.get("/v2/app/blobs/sha256:" + "2" * 64).status_code == 404


def test_pull_through_by_tag_and_digest_and_freshness(
        registry_plain: RegistryServer, start_proxy: Callable[..., Any],
        skopeo: Callable[..., str], repo_name: Callable[[str], str],
        layer_members: Callable[[str], dict[str, Any]],
        tmp_path: Path) -> None:
    """A pull the downstream lacks comes from the upstream, goes downstream, and later
    pulls come from the downstream; a digest is pushed by digest, never as a tag."""
    repo = repo_name("up")
    pushed = push_sample_image(registry_plain, repo, "v1")
    proxy = start_proxy(registry_plain, "-d", f"{registry_plain.host}/cache",
                        "-u", registry_plain.host, "--freshness", "3600")
    for _ in range(2):
        _pulled_files(skopeo, proxy, f"{repo}:v1", tmp_path, layer_members)
    assert len(proxy.events("pull-through")) == 1
    mirrored = skopeo("inspect", "--raw", *skopeo_args(registry_plain),
                      f"docker://{registry_plain.host}/cache/{repo}:v1").encode()
    assert mirrored == pushed.manifest  # no filter: a byte-for-byte mirror

    other = repo_name("bydigest")
    by_digest = push_sample_image(registry_plain, other, "v1",
                                  layers=[{"etc/other": b"other\n"}])
    _pulled_files(skopeo, proxy, f"{other}@{by_digest.manifest_digest}", tmp_path,
                  layer_members)
    base = f"{registry_plain.url}/v2/cache/{other}"
    head = httpx.head(f"{base}/manifests/{by_digest.manifest_digest}",
                      headers={"Accept": "application/vnd.oci.image.manifest.v1+json"})
    assert head.status_code == 200
    tags = httpx.get(f"{base}/tags/list")  # pushed by digest: no tag named sha256:...
    assert tags.status_code == 404 or not tags.json().get("tags")


def test_concurrent_pulls_through_of_the_tags_of_one_image(
        registry_plain: RegistryServer, start_proxy: Callable[..., Any],
        repo_name: Callable[[str], str], tmp_path: Path) -> None:
    """Six clients at once pull three tags of one image, each tag twice: each tag is
    copied once (the second pull waits for the first's copy), and every pull succeeds."""
    repo, mirror = repo_name("burst"), repo_name("burst-cache")
    tags = ("a", "b", "c")
    for tag in tags:
        push_sample_image(registry_plain, repo, tag)
    proxy = start_proxy(registry_plain, "-d", f"{registry_plain.host}/{mirror}",
                        "-u", registry_plain.host, "-f", "normalize-timestamps")
    pulls = [subprocess.Popen(
        ["skopeo", "--insecure-policy", "copy", "--src-tls-verify=false",
         f"docker://{proxy.host}/{repo}:{tag}", f"oci:{tmp_path / f'{tag}-{i}'}:x"],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        for tag in tags for i in range(2)]
    for pull in pulls:
        _, err = pull.communicate(timeout=120)
        assert pull.returncode == 0, err
    assert sorted(e["ref"] for e in proxy.events("pull-through")) == \
        sorted(tags), proxy.events("pull-through")
    digests = {httpx.head(f"{registry_plain.url}/v2/{mirror}/{repo}/manifests/{tag}",
                          headers={"Accept": "application/vnd.oci.image.manifest.v1+json"}
                          ).headers.get("Docker-Content-Digest") for tag in tags}
    assert len(digests) == 1 and None not in digests


@pytest.mark.parametrize("mode", ["plain", "token"])
def test_pull_through_with_filters_and_podman(
        mode: str, request: pytest.FixtureRequest, start_proxy: Callable[..., Any],
        podman_cli: Any, repo_name: Callable[[str], str],
        layer_members: Callable[[str], dict[str, Any]],
        tmp_path: Path) -> None:
    """podman pulls through the proxy, whose upstream and downstream are the registry
    in plain HTTP or behind TLS and Bearer tokens (the proxy's own listener is plain)."""
    registry: RegistryServer = request.getfixturevalue(f"registry_{mode}")
    repo = repo_name("pd")
    layout = _layout(tmp_path)
    skopeo_push = ["skopeo", "--insecure-policy", "copy", *skopeo_args(registry, "dest"),
                   f"oci:{layout}:v1", f"docker://{registry.host}/{repo}:v1"]
    subprocess.run(skopeo_push, check=True, capture_output=True, timeout=120)
    proxy = start_proxy(registry, "-d", f"{registry.host}/filtered",
                        "-u", registry.host, "-f", "exclude:pattern=tmp/junk",
                        "-f", "normalize-timestamps")
    podman_cli("pull", "--tls-verify=false", f"{proxy.host}/{repo}:v1")
    archive = tmp_path / "saved.tar"
    podman_cli("save", "--format", "docker-archive", "-o", str(archive),
               f"{proxy.host}/{repo}:v1")
    members = layer_members(str(archive))
    assert "etc/motd" in members and not any(n.startswith("tmp/junk/") for n in members)
    assert {m.mtime for m in members.values()} == {0}


@pytest.mark.parametrize("mode", ["plain", "token"])
def test_podman_pushes_through_the_proxy(
        mode: str, request: pytest.FixtureRequest, start_proxy: Callable[..., Any],
        podman_cli: Any, check_image: Callable[..., None],
        repo_name: Callable[[str], str],
        layer_members: Callable[[str], dict[str, Any]], tmp_path: Path) -> None:
    registry: RegistryServer = request.getfixturevalue(f"registry_{mode}")
    repo = repo_name("pdpush")
    proxy = start_proxy(registry, "-d", f"{registry.host}/pushed",
                        "-f", "normalize-timestamps")
    podman_cli("pull", f"oci:{_layout(tmp_path)}:v1")
    local = podman_cli("images", "--format", "{{.ID}}").stdout.split()[0]
    podman_cli("push", "--tls-verify=false", local, f"docker://{proxy.host}/{repo}:v1")
    check_image(registry, f"pushed/{repo}:v1")
    archive = tmp_path / "back.tar"
    podman_cli("pull", "--tls-verify=false", f"{proxy.host}/{repo}:v1")
    podman_cli("save", "--format", "docker-archive", "-o", str(archive),
               f"{proxy.host}/{repo}:v1")
    assert {m.mtime for m in layer_members(str(archive)).values()} == {0}


def test_sigterm_waits_for_the_push_in_flight(
        registry_plain: RegistryServer, start_proxy: Callable[..., Any],
        skopeo: Callable[..., str], check_image: Callable[..., None],
        repo_name: Callable[[str], str],
        layer_members: Callable[[str], dict[str, Any]], tmp_path: Path) -> None:
    repo = repo_name("graceful")
    temp = tmp_path / "temp"
    temp.mkdir()
    proxy = start_proxy(registry_plain, "-d", f"{registry_plain.host}/g",
                        "-f", "normalize-timestamps", global_args=("--temp-dir", str(temp)))
    layout = _layout(tmp_path, layer_size=48 << 20)  # long enough to be caught in flight
    client = subprocess.Popen(["skopeo", "--insecure-policy", "copy", "--dest-tls-verify=false",
                               f"oci:{layout}:v1", f"docker://{proxy.host}/{repo}:v1"],
                              stderr=subprocess.PIPE)
    while not proxy.events("push-started"):  # every blob is in; the manifest PUT waits
        assert client.poll() is None
        time.sleep(0.01)
    proxy.process.send_signal(signal.SIGTERM)
    assert client.wait(120) == 0, client.stderr.read() if client.stderr else ""
    assert proxy.process.wait(60) == 0
    check_image(registry_plain, f"g/{repo}:v1")
    assert os.listdir(temp) == []  # the blob store went with the run's temp dir
    assert proxy.events("push")[0]["ref"] == "v1"  # finished after the signal came


@pytest.mark.parametrize("mode", ["token"])
def test_token_registry_and_client_credentials(
        mode: str, registry_token: RegistryServer, start_proxy: Callable[..., Any],
        skopeo: Callable[..., str], check_image: Callable[..., None],
        repo_name: Callable[[str], str],
        layer_members: Callable[[str], dict[str, Any]], tmp_path: Path) -> None:
    """Downstream and upstream behind Bearer tokens; the proxy's own clients need Basic."""
    import bcrypt

    htpasswd = tmp_path / "htpasswd"
    hashed = bcrypt.hashpw(b"proxy-secret", bcrypt.gensalt(rounds=5)).decode()
    htpasswd.write_text(f"carol:{hashed}\n")
    repo = repo_name("tok")
    push_sample_image(registry_token, repo, "v1")
    proxy = start_proxy(registry_token, "-d", f"{registry_token.host}/tokmirror",
                        "-u", registry_token.host, "--htpasswd", str(htpasswd),
                        "-f", "normalize-timestamps")
    refused = subprocess.run(["skopeo", "inspect", "--tls-verify=false", "--creds",
                              "carol:wrong", f"docker://{proxy.host}/{repo}:v1"],
                             capture_output=True, text=True, timeout=60)
    assert refused.returncode != 0
    archive = tmp_path / "tok.tar"
    skopeo("copy", "--src-tls-verify=false", "--src-creds", "carol:proxy-secret",
           f"docker://{proxy.host}/{repo}:v1", f"docker-archive:{archive}")
    assert {m.mtime for m in layer_members(str(archive)).values()} == {0}
    check_image(registry_token, f"tokmirror/{repo}:v1")
    pushed = repo_name("tokpush")  # push mode, same proxy: to the token downstream
    skopeo("copy", "--dest-tls-verify=false", "--dest-creds", "carol:proxy-secret",
           f"oci:{_layout(tmp_path)}:v1", f"docker://{proxy.host}/{pushed}:v1")
    check_image(registry_token, f"tokmirror/{pushed}:v1")
    assert "proxy-secret" not in proxy.events_path.read_text()
    assert registry_token.password not in proxy.events_path.read_text()


def test_each_namespace_with_its_own_credentials(
        start_proxy: Callable[..., Any], skopeo: Callable[..., str],
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Upstream and downstream repositories get the credentials of their own auth file
    key (HOST/NS), as process does: two namespaces, each with its own user, one registry."""
    users = (User("alice", "alice-secret"),
             User("ua", "ua-secret", repositories=("nsa/*", "mirror/nsa/*")),
             User("ub", "ub-secret", repositories=("nsb/*", "mirror/nsb/*")))
    server = start_registry("token", tmp_path / "registry", users=users)
    try:
        for ns in ("nsa", "nsb"):
            push_sample_image(server, f"{ns}/app", "v1")
        host = server.host
        auths = {f"{host}/{ns}": {"auth": base64.b64encode(f"{user}:{user}-secret".encode())
                                  .decode()}
                 for ns, user in (("nsa", "ua"), ("nsb", "ub"), ("mirror/nsa", "ua"),
                                  ("mirror/nsb", "ub"))}
        auth_file = tmp_path / "auth.json"
        auth_file.write_text(json.dumps({"auths": auths}))
        monkeypatch.setenv("REGISTRY_AUTH_FILE", str(auth_file))
        monkeypatch.setenv("HOME", str(tmp_path / "home"))
        monkeypatch.setenv("DOCKER_CONFIG", str(tmp_path / "docker"))
        anonymous = dataclasses.replace(server, username=None, password=None)
        proxy = start_proxy(anonymous, "-d", f"{host}/mirror", "-u", host)
        for ns in ("nsa", "nsb"):  # pulled through: read upstream, written downstream
            skopeo("inspect", "--tls-verify=false", f"docker://{proxy.host}/{ns}/app:v1")
            skopeo("inspect", *skopeo_args(server), f"docker://{host}/mirror/{ns}/app:v1")
        # pushed: written downstream
        skopeo("copy", "--dest-tls-verify=false", f"oci:{_layout(tmp_path)}:v1",
               f"docker://{proxy.host}/nsb/pushed:v1")
        skopeo("inspect", *skopeo_args(server), f"docker://{host}/mirror/nsb/pushed:v1")
    finally:
        server.stop()


def test_a_changed_upstream_tag_is_copied_again_once_stale(
        registry_plain: RegistryServer, start_proxy: Callable[..., Any],
        skopeo: Callable[..., str], repo_name: Callable[[str], str],
        layer_members: Callable[[str], dict[str, Any]], tmp_path: Path) -> None:
    repo = repo_name("moving")
    push_sample_image(registry_plain, repo, "v1")
    proxy = start_proxy(registry_plain, "-d", f"{registry_plain.host}/fresh",
                        "-u", registry_plain.host, "--freshness", "0")
    _pulled_files(skopeo, proxy, f"{repo}:v1", tmp_path, layer_members)
    _pulled_files(skopeo, proxy, f"{repo}:v1", tmp_path, layer_members)  # unchanged: no copy
    assert len(proxy.events("pull-through")) == 1
    moved = push_sample_image(registry_plain, repo, "v1", layers=[{"etc/new": b"new\n"}])
    assert "etc/new" in _pulled_files(skopeo, proxy, f"{repo}:v1", tmp_path, layer_members)
    assert [e["digest"] for e in proxy.events("pull-through")][-1] == moved.manifest_digest


def test_a_mirror_the_downstream_lost_is_pulled_through_again(
        registry_plain: RegistryServer, start_proxy: Callable[..., Any],
        skopeo: Callable[..., str], repo_name: Callable[[str], str],
        layer_members: Callable[[str], dict[str, Any]], tmp_path: Path) -> None:
    """Tag and blobs removed from the downstream while the proxy runs (its answer for
    the tag still fresh, and its run having seen the blobs there): the next pull
    copies the image again, blobs included, instead of failing."""
    repo, mirror = repo_name("lost"), repo_name("lost-cache")
    push_sample_image(registry_plain, repo, "v1")
    proxy = start_proxy(registry_plain, "-d", f"{registry_plain.host}/{mirror}",
                        "-u", registry_plain.host, "--freshness", "3600")
    _pulled_files(skopeo, proxy, f"{repo}:v1", tmp_path, layer_members)
    remove_image(registry_plain, f"{mirror}/{repo}", "v1")
    assert "etc/hello.txt" in _pulled_files(skopeo, proxy, f"{repo}:v1", tmp_path,
                                            layer_members)
    assert len(proxy.events("pull-through")) == 2
    retried = proxy.events("pull-through-retried")
    assert len(retried) == 1 and "MANIFEST_BLOB_UNKNOWN" in retried[0]["error"]


def test_a_push_after_the_downstream_lost_the_blobs(
        registry_plain: RegistryServer, start_proxy: Callable[..., Any],
        skopeo: Callable[..., str], check_image: Callable[..., None],
        repo_name: Callable[[str], str], tmp_path: Path) -> None:
    """An image pushed again after the downstream dropped it and its blobs reaches
    the downstream whole: the proxy does not trust what it saw there before."""
    repo = repo_name("again")
    proxy = start_proxy(registry_plain, "-d", f"{registry_plain.host}/regained",
                        "-f", "normalize-timestamps")
    layout = f"oci:{_layout(tmp_path)}:v1"
    _skopeo_to_proxy(skopeo, layout, proxy, f"{repo}:v1")
    remove_image(registry_plain, f"regained/{repo}", "v1")
    _skopeo_to_proxy(skopeo, layout, proxy, f"{repo}:v1")
    check_image(registry_plain, f"regained/{repo}:v1")
    assert len(proxy.events("push")) == 2 and len(proxy.events("push-retried")) == 1


def test_tls_listener(registry_plain: RegistryServer, start_proxy: Callable[..., Any],
                      skopeo: Callable[..., str], check_image: Callable[..., None],
                      repo_name: Callable[[str], str], tmp_path: Path) -> None:
    import trustme

    ca = trustme.CA()
    issued = ca.issue_cert("127.0.0.1")
    issued.cert_chain_pems[0].write_to_path(str(tmp_path / "cert.pem"))
    issued.private_key_pem.write_to_path(str(tmp_path / "key.pem"))
    certs = tmp_path / "certs"
    certs.mkdir()
    ca.cert_pem.write_to_path(str(certs / "ca.crt"))
    repo = repo_name("tls")
    proxy = start_proxy(registry_plain, "-d", f"{registry_plain.host}/tls",
                        "--tls-cert", str(tmp_path / "cert.pem"),
                        "--tls-key", str(tmp_path / "key.pem"))
    assert proxy.events("listening")[0]["tls"] is True
    skopeo("copy", f"--dest-cert-dir={certs}", f"oci:{_layout(tmp_path)}:v1",
           f"docker://{proxy.host}/{repo}:v1")
    check_image(registry_plain, f"tls/{repo}:v1")
    untrusted = subprocess.run(["skopeo", "inspect", f"docker://{proxy.host}/{repo}:v1"],
                               capture_output=True, text=True, timeout=60)
    assert untrusted.returncode != 0 and "certificate" in untrusted.stderr


def test_bad_options_are_one_error_line(run_cli: Callable[..., Any],
                                        registry_plain: RegistryServer, tmp_path: Path) -> None:
    import trustme
    from cryptography.hazmat.primitives import serialization

    ca = trustme.CA()
    files = {}
    for name in ("a", "b"):
        issued = ca.issue_cert("127.0.0.1")
        issued.cert_chain_pems[0].write_to_path(str(tmp_path / f"{name}.crt"))
        issued.private_key_pem.write_to_path(str(tmp_path / f"{name}.key"))
        files[name] = (str(tmp_path / f"{name}.crt"), str(tmp_path / f"{name}.key"))
    key = serialization.load_pem_private_key((tmp_path / "a.key").read_bytes(), None)
    (tmp_path / "encrypted.key").write_bytes(key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
        serialization.BestAvailableEncryption(b"passphrase")))
    host = registry_plain.host
    for args, message in [
        (["-f", "nosuch"], "unknown filter 'nosuch'"),
        (["-f", "exclude"], "exclude"),
        (["--listen", "127.0.0.1:99999"], "port up to 65535"),
        (["--listen", host], "cannot listen on"),  # the registry has it
        (["--tls-cert", __file__], "--tls-cert and --tls-key go together"),
        # neither passes a range check: nan fails every comparison
        (["--freshness", "nan"], "not a finite number"),
        (["--keep-blobs", "inf"], "not a finite number"),
        (["-d", ""], "--downstream '': no registry host"),
        # "" names no file: not stderr (--events' default), not "no such file"
        *(([option, ""], f"'{option}': no file named") for option in
          ("--events", "--htpasswd", "--tls-cert", "--tls-key")),
        (["-d", f"http://{host}"], "not a URL"),
        (["-d", "127.0.0.1:99999/team"], "port 99999"),
        (["-d", f"{host}/Team"], "must be lowercase"),
        (["-d", "mirror/team"], "would be read as a repository on Docker Hub"),
        (["-d", f"{host}/team:v1"], "no tag or digest"),
        (["-u", "bob:hunter2-secret@127.0.0.1:0"], "--upstream '127.0.0.1:0': port 0"),
        (["--tls-cert", __file__, "--tls-key", __file__], "not a PEM certificate"),
        (["--tls-cert", files["a"][0], "--tls-key", files["b"][1]], "not the certificate's"),
        (["--tls-cert", files["a"][0], "--tls-key", str(tmp_path / "encrypted.key")],
         "the key is encrypted"),
    ]:
        result = run_cli("proxy", "-d", host, *args)
        errors = [line for line in result.stderr.splitlines() if line.startswith("Error: ")]
        assert result.exit_code != 0 and len(errors) == 1, (args, result.stderr)
        assert message in errors[0], (args, result.stderr)
        assert "listening" not in result.stderr and "hunter2" not in result.stderr
        assert "Traceback" not in result.stderr


def test_an_unreachable_upstream_serves_the_downstream_copy(
        registry_plain: RegistryServer, start_proxy: Callable[..., Any],
        skopeo: Callable[..., str], repo_name: Callable[[str], str],
        layer_members: Callable[[str], dict[str, Any]], tmp_path: Path) -> None:
    from occystrap_core.testing.faults import FaultFront

    repo = repo_name("stale")
    push_sample_image(registry_plain, repo, "v1")
    front = FaultFront(registry_plain.url)
    front.start()
    proxy = start_proxy(registry_plain, "-d", f"{registry_plain.host}/stale",
                        "-u", front.host, "--freshness", "0", global_args=("--retries", "0"))
    try:
        _pulled_files(skopeo, proxy, f"{repo}:v1", tmp_path, layer_members)
    finally:
        front.stop()
    assert "etc/hello.txt" in _pulled_files(skopeo, proxy, f"{repo}:v1", tmp_path, layer_members)
    assert [e["tag"] for e in proxy.events("stale")] == ["v1"]


def test_memory_stays_bounded_for_a_big_blob(
        registry_plain: RegistryServer, start_proxy: Callable[..., Any],
        skopeo: Callable[..., str], repo_name: Callable[[str], str],
        layer_members: Callable[[str], dict[str, Any]], tmp_path: Path) -> None:
    """A 96 MiB layer pushed through a rewriting filter and pulled back: the proxy's
    peak RSS stays far below what holding the blob would take."""
    repo = repo_name("big")
    image = images.sample_image(tag="v1", layers=[{"big.bin": os.urandom(96 << 20)}])
    layout = tmp_path / "big"
    images.write_oci_layout(str(layout), [image], ["v1"])
    proxy = start_proxy(registry_plain, "-d", f"{registry_plain.host}/big",
                        "-f", "normalize-timestamps")
    _skopeo_to_proxy(skopeo, f"oci:{layout}:v1", proxy, f"{repo}:v1")
    assert layer_members(str(_pull_archive(skopeo, proxy, f"{repo}:v1", tmp_path)))[
        "big.bin"].size == 96 << 20
    with open(f"/proc/{proxy.process.pid}/status") as f:
        peak = next(int(line.split()[1]) for line in f if line.startswith("VmHWM:"))
    assert peak < 160 * 1024, f"peak RSS {peak // 1024} MiB"


def test_an_index_whose_images_the_downstream_holds(
        registry_plain: RegistryServer, start_proxy: Callable[..., Any],
        skopeo: Callable[..., str], repo_name: Callable[[str], str], tmp_path: Path) -> None:
    """A second proxy (nothing in memory) takes an index whose images a client skips
    because the downstream already has them."""
    repo = repo_name("again")
    layout = tmp_path / "multi"
    arches = [images.sample_image(tag="v1", architecture=a, seed=i)
              for i, a in enumerate(("amd64", "arm64"))]
    images.write_files(str(layout), images.multi_platform_blobs(arches, "v1")[0])
    first = start_proxy(registry_plain, "-d", f"{registry_plain.host}/again")
    _skopeo_to_proxy(skopeo, f"oci:{layout}:v1", first, f"{repo}:v1")
    assert first.stop() == 0
    second = start_proxy(registry_plain, "-d", f"{registry_plain.host}/again")
    _skopeo_to_proxy(skopeo, f"oci:{layout}:v1", second, f"{repo}:v2")

    def raw(tag: str) -> str:
        return skopeo("inspect", "--raw", *skopeo_args(registry_plain),
                      f"docker://{registry_plain.host}/again/{repo}:{tag}")

    assert raw("v1") == raw("v2")


def test_the_layer_cache_spares_a_second_proxy_the_filtering(
        registry_plain: RegistryServer, start_proxy: Callable[..., Any],
        skopeo: Callable[..., str], check_image: Callable[..., None],
        repo_name: Callable[[str], str], layer_members: Callable[[str], dict[str, Any]],
        tmp_path: Path) -> None:
    """--layer-cache applies to the proxy as to process: a proxy started later, into a
    new downstream prefix, mounts what an earlier one filtered instead of filtering."""
    repo = repo_name("cached")
    push_sample_image(registry_plain, repo, "v1")
    cache = ("--layer-cache", str(tmp_path / "cache"))
    first = start_proxy(registry_plain, "-d", f"{registry_plain.host}/lc1", "-u",
                        registry_plain.host, "-f", "normalize-timestamps", global_args=cache)
    _pulled_files(skopeo, first, f"{repo}:v1", tmp_path, layer_members)
    assert first.stop() == 0
    assert first.events("stopped")[0]["bytes"] > 0
    second = start_proxy(registry_plain, "-d", f"{registry_plain.host}/lc2", "-u",
                         registry_plain.host, "-f", "normalize-timestamps", global_args=cache)
    files = _pulled_files(skopeo, second, f"{repo}:v1", tmp_path, layer_members)
    assert {m.mtime for m in files.values()} == {0}
    assert second.stop() == 0
    stopped = second.events("stopped")[0]
    assert stopped["bytes"] == 0 and stopped["cache_hits"] == 2 and stopped["mounted"] == 2
    check_image(registry_plain, f"lc2/{repo}:v1")


def test_the_grace_period_has_a_limit(
        registry_plain: RegistryServer, start_proxy: Callable[..., Any],
        repo_name: Callable[[str], str], tmp_path: Path) -> None:
    """Work still running when --shutdown-timeout ends is stopped, and leaves nothing
    behind: no tag downstream, no temporary file."""
    repo = repo_name("cut")
    temp = tmp_path / "temp"
    temp.mkdir()
    # a rate limit keeps the push's downstream requests in flight for seconds
    proxy = start_proxy(registry_plain, "-d", f"{registry_plain.host}/cut",
                        "-f", "normalize-timestamps", "--shutdown-timeout", "0",
                        global_args=("--temp-dir", str(temp), "--rate-limit", "3"))
    layout = _layout(tmp_path)
    client = subprocess.Popen(["skopeo", "--insecure-policy", "copy", "--dest-tls-verify=false",
                               f"oci:{layout}:v1", f"docker://{proxy.host}/{repo}:v1"],
                              stderr=subprocess.DEVNULL)
    while not proxy.events("push-started"):
        assert client.poll() is None
        time.sleep(0.01)
    proxy.process.send_signal(signal.SIGTERM)
    assert proxy.process.wait(60) == 0
    assert client.wait(60) != 0  # its push was cut short, and it was told
    assert not proxy.events("push")
    assert os.listdir(temp) == []
    head = httpx.head(f"{registry_plain.url}/v2/cut/{repo}/manifests/v1")
    assert head.status_code == 404


def test_upload_protocol(registry_plain: RegistryServer,
                         start_proxy: Callable[..., Any]) -> None:
    """The upload shapes clients use: monolithic, chunked with Content-Range, status,
    cancel, and a cross-repository mount of a blob the proxy holds."""
    import hashlib

    proxy = start_proxy(registry_plain, "-d", f"{registry_plain.host}/proto")
    blob = b"some layer bytes" * 1000
    digest = "sha256:" + hashlib.sha256(blob).hexdigest()
    with httpx.Client(base_url=f"http://{proxy.host}") as client:
        mono = client.post(f"/v2/a/blobs/uploads/?digest={digest}", content=blob)
        assert mono.status_code == 201 and mono.headers["docker-content-digest"] == digest
        head = client.head(f"/v2/a/blobs/{digest}")
        assert head.status_code == 200 and head.headers["content-length"] == str(len(blob))
        assert client.get(f"/v2/a/blobs/{digest}").content == blob
        mounted = client.post(f"/v2/b/blobs/uploads/?mount={digest}&from=a")
        assert mounted.status_code == 201

        start = client.post("/v2/c/blobs/uploads/")
        where = start.headers["location"]
        first = client.patch(where, content=blob[:100], headers={"Content-Range": "0-99"})
        assert first.status_code == 202 and first.headers["range"] == "0-99"
        skipped = client.patch(where, content=blob[200:300], headers={"Content-Range": "200-299"})
        assert skipped.status_code == 416
        status = client.get(where)
        assert status.status_code == 204 and status.headers["range"] == "0-99"
        done = client.put(f"{where}?digest={digest}", content=blob[100:])
        assert done.status_code == 201

        abandoned = client.post("/v2/c/blobs/uploads/").headers["location"]
        assert client.delete(abandoned).status_code == 204
        assert client.get(abandoned).status_code == 404


def test_a_patch_whose_range_is_not_its_body_is_refused_and_undone(
        registry_plain: RegistryServer, start_proxy: Callable[..., Any]) -> None:
    """A PATCH whose Content-Range spans more or fewer bytes than its body carried
    is answered 416 (the spec's rule) and leaves the upload where it stood: the
    client resumes from the Range, and the blob completes and reads back whole."""
    import hashlib

    proxy = start_proxy(registry_plain, "-d", f"{registry_plain.host}/ranges")
    blob = bytes(range(256)) * 40
    digest = "sha256:" + hashlib.sha256(blob).hexdigest()
    with httpx.Client(base_url=f"http://{proxy.host}") as client:
        where = client.post("/v2/r/blobs/uploads/").headers["location"]
        assert client.patch(where, content=blob[:100],
                            headers={"Content-Range": "0-99"}).status_code == 202
        huge = "9" * 5000  # more digits than int() reads
        for header, body in (("100-199", blob[100:150]), ("100-149", blob[100:200]),
                             (f"100-{huge}", blob[100:200]), (f"{huge}-{huge}", blob[100:200])):
            short = client.patch(where, content=body, headers={"Content-Range": header})
            assert short.status_code == 416, header
            assert short.json()["errors"][0]["code"] == "BLOB_UPLOAD_INVALID"
            assert client.get(where).headers["range"] == "0-99"
        rest = client.patch(where, content=blob[100:],
                            headers={"Content-Range": f"100-{len(blob) - 1}"})
        assert rest.status_code == 202 and rest.headers["range"] == f"0-{len(blob) - 1}"
        assert client.put(f"{where}?digest={digest}").status_code == 201
        assert client.get(f"/v2/r/blobs/{digest}").content == blob


def test_a_blob_get_with_a_range_is_answered_206(
        registry_plain: RegistryServer, start_proxy: Callable[..., Any]) -> None:
    """Clients resume a pull with Range: a blob from the store and one from the
    downstream are answered 206 with the asked bytes and Content-Range, 416 past
    the end, 200 whole without a Range (or with several), and a download broken off
    then resumed adds up to the digest."""
    import hashlib

    proxy = start_proxy(registry_plain, "-d", f"{registry_plain.host}/ranged")
    blobs = {"store": os.urandom(300_000), "downstream": os.urandom(200_000)}
    digest = {k: "sha256:" + hashlib.sha256(v).hexdigest() for k, v in blobs.items()}
    with httpx.Client(base_url=f"http://{proxy.host}") as client:
        assert client.post(f"/v2/a/blobs/uploads/?digest={digest['store']}",
                           content=blobs["store"]).status_code == 201
        started = httpx.post(f"{registry_plain.url}/v2/ranged/a/blobs/uploads/")
        assert httpx.put(f"{started.headers['location']}&digest={digest['downstream']}",
                         content=blobs["downstream"]).status_code == 201
        for where, blob in blobs.items():
            url, n = f"/v2/a/blobs/{digest[where]}", len(blob)
            whole = client.get(url)
            assert (whole.status_code, whole.content) == (200, blob), where
            assert whole.headers["accept-ranges"] == "bytes"
            for asked, first, last in (("1000-", 1000, n - 1), ("10-19", 10, 19),
                                       ("0-0", 0, 0), ("-5", n - 5, n - 1),
                                       (f"{n - 3}-{n * 2}", n - 3, n - 1)):
                part = client.get(url, headers={"Range": f"bytes={asked}"})
                assert part.status_code == 206, (where, asked)
                assert part.headers["content-range"] == f"bytes {first}-{last}/{n}"
                assert part.headers["content-length"] == str(last - first + 1)
                assert part.content == blob[first:last + 1], (where, asked)
            past = client.get(url, headers={"Range": f"bytes={n}-"})
            assert past.status_code == 416 and past.headers["content-range"] == f"bytes */{n}"
            several = client.get(url, headers={"Range": "bytes=0-1,5-6"})
            assert (several.status_code, several.content) == (200, blob)
            huge = "9" * 5000  # more digits than int() reads
            far = client.get(url, headers={"Range": f"bytes={huge}-"})
            assert far.status_code == 416 and far.headers["content-range"] == f"bytes */{n}"
            to_far = client.get(url, headers={"Range": f"bytes=10-{huge}"})
            assert to_far.status_code == 206 and to_far.content == blob[10:]
            tail = client.get(url, headers={"Range": f"bytes=-{huge}"})
            assert tail.status_code == 206 and tail.content == blob

            got = b""
            with client.stream("GET", url) as broken:  # a pull interrupted halfway
                for chunk in broken.iter_raw():
                    got += chunk
                    if len(got) >= n // 2:
                        break
            rest = client.get(url, headers={"Range": f"bytes={len(got)}-"})
            assert rest.status_code == 206
            assert "sha256:" + hashlib.sha256(got + rest.content).hexdigest() == digest[where]


def test_a_download_the_client_breaks_off_is_logged_as_aborted(
        registry_plain: RegistryServer, start_proxy: Callable[..., Any]) -> None:
    """A client that closes a blob download early is in the access log with the
    bytes sent and ``aborted``, not as a plain 200; a whole download is not."""
    import hashlib

    proxy = start_proxy(registry_plain, "-d", f"{registry_plain.host}/aborted")
    blob = os.urandom(1 << 20) * 48  # more than the socket buffers hold
    digest = "sha256:" + hashlib.sha256(blob).hexdigest()
    path = f"/v2/a/blobs/{digest}"
    with httpx.Client(base_url=f"http://{proxy.host}") as client:
        assert client.post(f"/v2/a/blobs/uploads/?digest={digest}",
                           content=blob).status_code == 201
        assert client.get(path).content == blob
        with client.stream("GET", path) as broken:
            next(broken.iter_raw())
        # closed unread: httpx drops the connection

    def gets() -> list[dict[str, Any]]:
        return [e for e in proxy.events("request") if e["method"] == "GET" and e["path"] == path]

    deadline = time.monotonic() + 30
    while len(gets()) < 2 and time.monotonic() < deadline:
        time.sleep(0.05)
    whole, broken_off = gets()
    assert (whole["status"], whole["bytes"], whole["aborted"]) == (200, len(blob), False)
    assert broken_off["status"] == 200 and broken_off["aborted"] is True
    assert 0 < broken_off["bytes"] < len(blob)


def test_tags_are_listed(registry_plain: RegistryServer, start_proxy: Callable[..., Any],
                         skopeo: Callable[..., str], repo_name: Callable[[str], str]) -> None:
    """The downstream's tags (push mode) or the upstream's (pull-through), with the
    spec's n/last paging."""
    repo = repo_name("listed")
    for tag in ("a", "b", "c"):
        push_sample_image(registry_plain, f"lst/{repo}", tag)
    push_mode = start_proxy(registry_plain, "-d", f"{registry_plain.host}/lst")
    listed = json.loads(skopeo("list-tags", "--tls-verify=false",
                               f"docker://{push_mode.host}/{repo}"))
    assert listed["Tags"] == ["a", "b", "c"]
    with httpx.Client(base_url=f"http://{push_mode.host}") as client:
        page = client.get(f"/v2/{repo}/tags/list", params={"n": "2"})
        assert page.json()["tags"] == ["a", "b"] and "last=b" in page.headers["link"]
        rest = client.get(f"/v2/{repo}/tags/list", params={"n": "2", "last": "b"})
        assert rest.json()["tags"] == ["c"] and "link" not in rest.headers
        empty = client.get(f"/v2/{repo}/tags/list", params={"n": "0"})
        assert empty.status_code == 200 and empty.json()["tags"] == []
        assert "link" not in empty.headers
        for odd in ("9" * 5000, "\u00b2"):  # more digits than int() reads; a superscript 2
            whole = client.get(f"/v2/{repo}/tags/list", params={"n": odd})
            assert whole.status_code == 200 and whole.json()["tags"] == ["a", "b", "c"]
            assert "link" not in whole.headers
        assert client.get("/v2/nosuchrepo/tags/list").status_code == 404
    pull_through = start_proxy(registry_plain, "-d", f"{registry_plain.host}/elsewhere",
                               "-u", f"{registry_plain.host}/lst")
    assert json.loads(skopeo("list-tags", "--tls-verify=false",
                             f"docker://{pull_through.host}/{repo}"))["Tags"] == ["a", "b", "c"]


@pytest.mark.parametrize("filters", [(), ("-f", "normalize-timestamps")])
def test_an_oras_artifact_goes_through_unchanged(
        filters: tuple[str, ...], registry_plain: RegistryServer,
        start_proxy: Callable[..., Any], repo_name: Callable[[str], str], tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    """oras types a plain file as an uncompressed OCI layer by default: an artifact's
    blob all the same, which reaches the downstream as it was pushed (not gzipped,
    not handed to a filter, which works on file systems), so the client pulls back
    its file."""
    import oras.client

    repo = repo_name("oras")
    proxy = start_proxy(registry_plain, "-d", f"{registry_plain.host}/art", *filters)
    monkeypatch.chdir(tmp_path)  # oras names files relative to the working directory
    Path("notes.txt").write_text("release notes\n")
    client = oras.client.OrasClient(hostname=proxy.host, insecure=True)
    pushed = client.push(target=f"{proxy.host}/{repo}:v1", files=["notes.txt"])
    assert pushed.status_code == 201
    digest = pushed.headers["Docker-Content-Digest"]
    mirrored = httpx.head(f"{registry_plain.url}/v2/art/{repo}/manifests/v1",
                          headers={"Accept": "application/vnd.oci.image.manifest.v1+json"})
    assert mirrored.headers.get("Docker-Content-Digest") == digest  # byte for byte
    files = client.pull(target=f"{proxy.host}/{repo}:v1", outdir=str(tmp_path / "out"))
    assert [Path(f).read_text() for f in files] == ["release notes\n"]


def test_an_index_nested_too_deep_is_a_client_error(
        registry_plain: RegistryServer, start_proxy: Callable[..., Any],
        repo_name: Callable[[str], str]) -> None:
    """What the copy engine does not support is the client's 400 UNSUPPORTED, saying
    why, not a 502 that invites it to try again."""
    import hashlib

    repo = repo_name("deep")
    proxy = start_proxy(registry_plain, "-d", f"{registry_plain.host}/deep")
    oci = "application/vnd.oci.image"
    with httpx.Client(base_url=f"http://{proxy.host}") as client:
        def push(ref: str, doc: dict[str, Any]) -> dict[str, Any]:
            data = json.dumps(doc).encode()
            digest = "sha256:" + hashlib.sha256(data).hexdigest()
            answer = client.put(f"/v2/{repo}/manifests/{ref or digest}", content=data,
                                headers={"Content-Type": doc["mediaType"]})
            assert answer.status_code == (201 if not ref else 400), answer.text
            return {"mediaType": doc["mediaType"], "digest": digest, "size": len(data),
                    **({"errors": answer.json()["errors"]} if ref else {})}

        config = b'{"architecture":"amd64","os":"linux","rootfs":{"type":"layers","diff_ids":[]}}'
        digest = "sha256:" + hashlib.sha256(config).hexdigest()
        assert client.post(f"/v2/{repo}/blobs/uploads/?digest={digest}",
                           content=config).status_code == 201
        child = push("", {"schemaVersion": 2, "mediaType": f"{oci}.manifest.v1+json",
                          "config": {"mediaType": f"{oci}.config.v1+json",
                                     "digest": digest, "size": len(config)}, "layers": []})
        for _ in range(4):
            child = push("", {"schemaVersion": 2, "mediaType": f"{oci}.index.v1+json",
                              "manifests": [child]})
        refused = push("v1", {"schemaVersion": 2, "mediaType": f"{oci}.index.v1+json",
                              "manifests": [child]})
    assert refused["errors"][0]["code"] == "UNSUPPORTED"
    assert "nested" in refused["errors"][0]["message"]


def test_a_slow_upload_outlasts_keep_blobs(
        registry_plain: RegistryServer, start_proxy: Callable[..., Any]) -> None:
    """A streamed PATCH that lasts longer than --keep-blobs (a big layer on a slow
    link) is not swept under the client: its PUT completes the blob."""
    import hashlib

    proxy = start_proxy(registry_plain, "-d", f"{registry_plain.host}/slow",
                        "--keep-blobs", "2")  # swept every second
    chunks = [bytes([i]) * 1024 for i in range(8)]
    digest = "sha256:" + hashlib.sha256(b"".join(chunks)).hexdigest()

    def slowly() -> Any:
        for chunk in chunks:
            yield chunk
            time.sleep(0.5)  # the client's pace, four seconds in all

    with httpx.Client(base_url=f"http://{proxy.host}", timeout=60) as client:
        where = client.post("/v2/app/blobs/uploads/").headers["location"]
        assert client.patch(where, content=slowly()).status_code == 202
        done = client.put(f"{where}?digest={digest}")
        assert done.status_code == 201, done.text
        assert client.get(f"/v2/app/blobs/{digest}").content == b"".join(chunks)


def _with_attestation(layout: Path) -> None:
    """An OCI layout of one amd64 image and its buildx provenance attestation (an
    ``unknown/unknown`` manifest with an in-toto layer), as ``docker buildx build
    --push`` writes by default."""
    import hashlib

    def put(data: bytes) -> dict[str, Any]:
        digest = "sha256:" + hashlib.sha256(data).hexdigest()
        (layout / "blobs" / "sha256" / digest[7:]).write_bytes(data)
        return {"digest": digest, "size": len(data)}

    image = images.sample_image(tag="v1", architecture="amd64", seed=5)
    files, index = images.multi_platform_blobs([image], "v1")
    images.write_files(str(layout), files)
    doc = json.loads(index)
    statement = put(b'{"_type":"https://in-toto.io/Statement/v0.1","predicate":{}}')
    config = put(json.dumps({"architecture": "unknown", "os": "unknown", "config": {},
                             "rootfs": {"type": "layers",
                                        "diff_ids": [statement["digest"]]}}).encode())
    oci = "application/vnd.oci.image"
    manifest = put(json.dumps({
        "schemaVersion": 2, "mediaType": f"{oci}.manifest.v1+json",
        "config": {"mediaType": f"{oci}.config.v1+json", **config},
        "layers": [{"mediaType": "application/vnd.in-toto+json", **statement}]}).encode())
    doc["manifests"].append({
        "mediaType": f"{oci}.manifest.v1+json", **manifest,
        "annotations": {"vnd.docker.reference.digest": doc["manifests"][0]["digest"],
                        "vnd.docker.reference.type": "attestation-manifest"},
        "platform": {"architecture": "unknown", "os": "unknown"}})
    top = json.loads((layout / "index.json").read_text())
    top["manifests"][0].update(put(json.dumps(doc).encode()))
    (layout / "index.json").write_text(json.dumps(top))


def test_a_buildx_index_with_attestations_through_filters(
        registry_plain: RegistryServer, start_proxy: Callable[..., Any],
        skopeo: Callable[..., str], check_image: Callable[..., None],
        repo_name: Callable[[str], str], tmp_path: Path) -> None:
    """buildx pushes an attestation (no file system) beside each image. Through a
    filter the image is rewritten and its attestation, which describes the bytes
    as built, is left out of the index; without filters it goes through unchanged."""
    repo = repo_name("buildx")
    layout = tmp_path / "buildx"
    _with_attestation(layout)
    for prefix, filters in (("bxf", ("-f", "normalize-timestamps")), ("bx", ())):
        proxy = start_proxy(registry_plain, "-d", f"{registry_plain.host}/{prefix}", *filters)
        _skopeo_to_proxy(skopeo, f"oci:{layout}:v1", proxy, f"{repo}:v1")
        raw = json.loads(skopeo("inspect", "--raw", *skopeo_args(registry_plain),
                                f"docker://{registry_plain.host}/{prefix}/{repo}:v1"))
        kinds = [m.get("annotations", {}).get("vnd.docker.reference.type", "image")
                 for m in raw["manifests"]]
        assert kinds == (["image"] if filters else ["image", "attestation-manifest"])
        check_image(registry_plain, f"{prefix}/{repo}:v1", "--platform", "linux/amd64")


def test_a_pushed_digest_is_not_served_once_its_blobs_are_swept(
        registry_plain: RegistryServer, start_proxy: Callable[..., Any],
        skopeo: Callable[..., str], repo_name: Callable[[str], str], tmp_path: Path) -> None:
    """Through a filter, the digest a push reports names the unfiltered image, which
    only the proxy's store holds. A pull by it works while the store has its blobs;
    once they are swept it is a plain MANIFEST_UNKNOWN, not a manifest whose blobs
    then answer 404 halfway through the pull."""
    repo = repo_name("swept")
    proxy = start_proxy(registry_plain, "-d", f"{registry_plain.host}/swept",
                        "-f", "normalize-timestamps", "--keep-blobs", "2")
    reported = tmp_path / "digest"
    skopeo("copy", "--dest-tls-verify=false", "--digestfile", str(reported),
           f"oci:{_layout(tmp_path)}:v1", f"docker://{proxy.host}/{repo}:v1")
    by_digest = f"{repo}@{reported.read_text().strip()}"
    _pull_archive(skopeo, proxy, by_digest, tmp_path)  # its blobs are still there
    deadline = time.monotonic() + 60
    while not proxy.events("swept"):
        assert time.monotonic() < deadline, "the blob store was never swept"
        time.sleep(0.1)
    pull = subprocess.run(["skopeo", "--insecure-policy", "copy", "--src-tls-verify=false",
                           f"docker://{proxy.host}/{by_digest}", f"oci:{tmp_path / 'late'}:x"],
                          capture_output=True, text=True, timeout=60)
    assert pull.returncode != 0 and "manifest unknown" in pull.stderr, pull.stderr
    assert "reading blob" not in pull.stderr


def test_a_push_that_outlasts_keep_blobs_keeps_its_first_blobs(
        registry_plain: RegistryServer, start_proxy: Callable[..., Any],
        check_image: Callable[..., None], repo_name: Callable[[str], str]) -> None:
    """A push on a slow link: the config goes up first, then one layer streams for
    longer than --keep-blobs. The blobs the push completed (or skipped) earlier are
    still there when its manifest comes, so the push succeeds."""
    import hashlib

    repo = repo_name("longpush")
    proxy = start_proxy(registry_plain, "-d", f"{registry_plain.host}/long",
                        "--keep-blobs", "2")  # swept every second
    image = images.sample_image(tag="v1", layers=[{"etc/motd": b"hello\n"}])
    layer = images.make_layer({"etc/motd": b"hello\n"})

    def digest(data: bytes) -> str:
        return "sha256:" + hashlib.sha256(data).hexdigest()

    def slowly() -> Any:
        for start in range(0, len(layer), len(layer) // 8 + 1):
            yield layer[start:start + len(layer) // 8 + 1]
            time.sleep(0.6)  # the client's pace, about five seconds in all

    with httpx.Client(base_url=f"http://{proxy.host}", timeout=60) as client:
        config = client.post(f"/v2/{repo}/blobs/uploads/?digest={image.config_digest}",
                             content=image.config)
        assert config.status_code == 201
        where = client.post(f"/v2/{repo}/blobs/uploads/").headers["location"]
        assert client.patch(where, content=slowly()).status_code == 202
        assert client.put(f"{where}?digest={digest(layer)}").status_code == 201
        manifest = {"schemaVersion": 2,
                    "mediaType": "application/vnd.oci.image.manifest.v1+json",
                    "config": {"mediaType": "application/vnd.oci.image.config.v1+json",
                               "digest": image.config_digest, "size": len(image.config)},
                    "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar",
                                "digest": digest(layer), "size": len(layer)}]}
        pushed = client.put(f"/v2/{repo}/manifests/v1", content=json.dumps(manifest),
                            headers={"Content-Type": manifest["mediaType"]})
        assert pushed.status_code == 201, pushed.text
    check_image(registry_plain, f"long/{repo}:v1")


def test_a_push_that_does_not_add_up_is_the_client_s_error(
        registry_plain: RegistryServer, start_proxy: Callable[..., Any],
        repo_name: Callable[[str], str]) -> None:
    """An image whose config lists a diff_id its layer does not have (skopeo 1.9
    pushes zstd:chunked layers so): the filter finds out, and the client is told
    (400 MANIFEST_INVALID, with the reason), not given a 502 as if the downstream
    had failed."""
    import gzip
    import hashlib

    def digest(data: bytes) -> str:
        return "sha256:" + hashlib.sha256(data).hexdigest()

    repo = repo_name("stale")
    proxy = start_proxy(registry_plain, "-d", f"{registry_plain.host}/stale",
                        "-f", "normalize-timestamps")
    layer = gzip.compress(images.make_layer({"etc/motd": b"hello\n"}), mtime=0)
    config = json.dumps({"architecture": "amd64", "os": "linux", "rootfs": {
        "type": "layers", "diff_ids": [digest(b"the tar before a conversion")]}}).encode()
    oci = "application/vnd.oci.image"
    manifest = {"schemaVersion": 2, "mediaType": f"{oci}.manifest.v1+json",
                "config": {"mediaType": f"{oci}.config.v1+json", "digest": digest(config),
                           "size": len(config)},
                "layers": [{"mediaType": f"{oci}.layer.v1.tar+gzip", "digest": digest(layer),
                            "size": len(layer)}]}
    with httpx.Client(base_url=f"http://{proxy.host}", timeout=60) as client:
        for blob in (config, layer):
            assert client.post(f"/v2/{repo}/blobs/uploads/?digest={digest(blob)}",
                               content=blob).status_code == 201
        refused = client.put(f"/v2/{repo}/manifests/v1", content=json.dumps(manifest),
                             headers={"Content-Type": manifest["mediaType"]})
    assert refused.status_code == 400, refused.text
    error = refused.json()["errors"][0]
    assert error["code"] == "MANIFEST_INVALID" and "diff_id" in error["message"]


def test_what_was_pushed_through_a_pull_through_proxy_reads_back(
        registry_plain: RegistryServer, start_proxy: Callable[..., Any],
        skopeo: Callable[..., str], repo_name: Callable[[str], str],
        layer_members: Callable[[str], dict[str, Any]], tmp_path: Path) -> None:
    """With --upstream, a tag the upstream lacks but the downstream holds (pushed
    through the proxy) is served from the downstream, and listed: a pull the
    downstream can serve does not need the upstream."""
    repo = repo_name("both")
    proxy = start_proxy(registry_plain, "-d", f"{registry_plain.host}/both",
                        "-u", f"{registry_plain.host}/nothing-here", "-f", "normalize-timestamps")
    _skopeo_to_proxy(skopeo, f"oci:{_layout(tmp_path)}:v1", proxy, f"{repo}:v1")
    members = _pulled_files(skopeo, proxy, f"{repo}:v1", tmp_path, layer_members)
    assert {m.mtime for m in members.values()} == {0}
    listed = json.loads(skopeo("list-tags", "--tls-verify=false",
                               f"docker://{proxy.host}/{repo}"))
    assert listed["Tags"] == ["v1"]
    with httpx.Client(base_url=f"http://{proxy.host}") as client:
        assert client.get(f"/v2/{repo}/manifests/v2").status_code == 404
        assert client.get("/v2/nosuchrepo/tags/list").status_code == 404


def test_a_filtering_pull_through_reads_each_upstream_manifest_once(
        registry_plain: RegistryServer, start_proxy: Callable[..., Any],
        repo_name: Callable[[str], str], tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    """An artifact passes the filters unchanged, told from an image by the manifest the
    copy reads anyway: a pull-through costs one GET of it on the upstream (Docker Hub
    counts each as a pull), for an artifact and for a filtered image alike."""
    import oras.client

    upstream = start_registry("plain", tmp_path / "upstream", access_log=True)
    try:
        repo = repo_name("once")
        push_sample_image(upstream, repo, "image")
        monkeypatch.chdir(tmp_path)
        Path("notes.txt").write_text("release notes\n")
        oras.client.OrasClient(hostname=upstream.host, insecure=True).push(
            target=f"{upstream.host}/{repo}:notes", files=["notes.txt"])
        proxy = start_proxy(registry_plain, "-d", f"{registry_plain.host}/once",
                            "-u", upstream.host, "-f", "normalize-timestamps")
        client = oras.client.OrasClient(hostname=proxy.host, insecure=True)
        files = client.pull(target=f"{proxy.host}/{repo}:notes", outdir=str(tmp_path / "out"))
        assert [Path(f).read_text() for f in files] == ["release notes\n"]
        pulled = httpx.get(f"http://{proxy.host}/v2/{repo}/manifests/image", headers={
            "Accept": "application/vnd.oci.image.manifest.v1+json,"
                      "application/vnd.docker.distribution.manifest.v2+json"})
        assert pulled.status_code == 200, pulled.text
        time.sleep(0.2)  # let the access log flush
        gets = [r for r in upstream.requests() if r.startswith(f"GET /v2/{repo}/manifests/")]
        assert sorted(gets) == [f"GET /v2/{repo}/manifests/image",
                                f"GET /v2/{repo}/manifests/notes"]
    finally:
        upstream.stop()
