"""registry:// URIs: references as the core parses them, credentials, options, platforms."""

from __future__ import annotations

import pytest

from occystrap_core.context import Context
from occystrap_core.errors import URIError
from occystrap_core.oci import platform as platforms
from occystrap_core.oci.platform import Platform
from occystrap_core.oci.reference import Reference, parse, same_registry
from occystrap_core.pipeline import build_output, resolve

D = "sha256:" + "ab" * 32


@pytest.mark.parametrize("text, expected", [
    ("busybox", Reference("docker.io", "library/busybox", "latest")),
    ("busybox:1.36", Reference("docker.io", "library/busybox", "1.36")),
    ("docker.io/busybox", Reference("docker.io", "library/busybox", "latest")),
    ("index.docker.io/library/busybox", Reference("docker.io", "library/busybox", "latest")),
    ("registry-1.docker.io/busybox", Reference("docker.io", "library/busybox", "latest")),
    ("someuser/app", Reference("docker.io", "someuser/app", "latest")),
    ("quay.io/org/app:v1", Reference("quay.io", "org/app", "v1")),
    ("localhost/app", Reference("localhost", "app", "latest")),
    ("localhost:5000/a/b/c:t", Reference("localhost:5000", "a/b/c", "t")),
    ("127.0.0.1:5000/app", Reference("127.0.0.1:5000", "app", "latest")),
    ("[::1]:5000/app", Reference("[::1]:5000", "app", "latest")),
    ("Registry.Example.com/app", Reference("Registry.Example.com", "app", "latest")),
    (f"busybox@{D}", Reference("docker.io", "library/busybox", None, D)),
    (f"host:5000/app@{D}", Reference("host:5000", "app", None, D)),
    (f"host:5000/app:v2@{D}", Reference("host:5000", "app", "v2", D)),
    ("host/a_b.c__d-e---f/g", Reference("docker.io", "host/a_b.c__d-e---f/g", "latest")),
    ("h.example/a_b/c", Reference("h.example", "a_b/c", "latest")),
])
def test_parse(text: str, expected: Reference) -> None:
    assert parse(text) == expected


def test_properties() -> None:
    hub = parse("busybox")
    assert hub.api_host == "registry-1.docker.io"
    assert hub.name == "docker.io/library/busybox"
    assert hub.ref == "latest"
    assert str(hub) == "docker.io/library/busybox:latest"
    pinned = parse(f"host:5000/app:v2@{D}")
    assert pinned.api_host == "host:5000"
    assert pinned.ref == D
    assert str(pinned) == f"host:5000/app:v2@{D}"
    assert parse(str(pinned)) == pinned


@pytest.mark.parametrize("text, message", [
    ("", "empty"),
    ("host/App", "lowercase"),
    ("Busybox", "lowercase"),  # upper case first component without '/': a path
    ("host/app:", "invalid tag"),
    ("host/app:-x", "invalid tag"),
    ("host/app:" + "x" * 129, "invalid tag"),
    ("host/app@sha256:abc", "not a valid digest"),
    ("host/app@md5:" + "a" * 32, "not a valid digest"),
    ("host/-app", "invalid repository path component"),
    ("host/a//b", "invalid repository path component"),
    ("host/a..b", "invalid repository path component"),
    ("host.example/", "no repository name"),
    ("host/", "invalid repository path component ''"),
    ("-bad.host/app", "invalid registry host"),
    ("host:port/app", "invalid registry host"),
    ("host/" + "a" * 260, "longer than 255"),
])
def test_bad_references(text: str, message: str) -> None:
    with pytest.raises(URIError, match=message):
        parse(text)


def test_same_registry() -> None:
    assert same_registry("docker.io", "registry-1.docker.io")
    assert same_registry("Host:5000", "host:5000")
    assert not same_registry("host:5000", "host:5001")


def _resolve(uri: str, role: str = "input"):
    with Context() as ctx:
        return resolve(ctx, uri, role)[0]  # type: ignore[arg-type]


def test_resolve_canonical_target_and_options() -> None:
    r = _resolve("registry://localhost:5000/app:v1?insecure=true&platform=linux/arm64")
    assert r.scheme == "registry"
    assert r.target == "localhost:5000/app:v1"
    assert r.options == {"insecure": True, "platform": "linux/arm64", "platforms": None,
                         "all_platforms": False, "page_size": None, "os": None, "arch": None,
                         "architecture": None, "variant": None, "tls_verify": True}
    assert r.credentials is None
    assert _resolve("REGISTRY://busybox").target == "docker.io/library/busybox:latest"
    assert _resolve(f"registry://busybox@{D}").target == f"docker.io/library/busybox@{D}"


def test_resolve_userinfo_is_percent_decoded_and_hidden() -> None:
    r = _resolve(f"registry://us%40er:p%3Ass%2Fw@host:5000/app@{D}", "output")
    assert r.credentials is not None
    assert (r.credentials.username, r.credentials.password) == ("us@er", "p:ss/w")
    assert r.target == f"host:5000/app@{D}"
    assert "p:ss" not in r.raw and "p%3Ass" not in r.raw
    assert "p:ss" not in repr(r) + repr(r.credentials)


def test_resolve_query_credentials() -> None:
    r = _resolve("registry://host/app?username=bob&password=s3cret&insecure=1")
    assert r.credentials is not None
    assert (r.credentials.username, r.credentials.password) == ("bob", "s3cret")
    assert r.options["insecure"] is True
    assert "s3cret" not in r.raw


def test_resolve_errors() -> None:
    with pytest.raises(URIError, match="invalid image reference 'host/App'"):
        _resolve("registry://host/App")
    with pytest.raises(URIError, match="unknown option 'bogus'"):
        _resolve("registry://host/app?bogus=1")
    with Context() as ctx:
        with pytest.raises(URIError, match="compression must be one of gzip, zstd, none"):
            build_output(ctx, "registry://host/app?compression=bzip2")
        with pytest.raises(URIError, match="gzip level must be between 0 and 3"):
            build_output(ctx, "registry://host/app?level=9")
    with pytest.raises(URIError, match="unknown option 'compression'"):
        _resolve("registry://host/app?compression=gzip", "input")


@pytest.mark.parametrize("a, b", [
    ("linux/arm64", "linux/arm64/v8"),
    ("linux/aarch64", "linux/arm64/8"),
    ("linux/amd64", "linux/x86_64"),
    ("linux/amd64", "linux/amd64/v1"),
    ("linux/arm", "linux/arm/v7"),
    ("linux/armhf", "linux/arm/7"),
    ("linux/armel", "linux/arm/v6"),
    ("linux/i386", "linux/386"),
    ("macos/arm64", "darwin/arm64"),
])
def test_platforms_equal(a: str, b: str) -> None:
    assert platforms.matches(platforms.parse(a), platforms.parse(b))


@pytest.mark.parametrize("a, b", [
    ("linux/arm64", "linux/arm64/v9"),
    ("linux/amd64", "linux/amd64/v2"),
    ("linux/arm/v6", "linux/arm/v7"),
    ("linux/amd64", "windows/amd64"),
])
def test_platforms_differ(a: str, b: str) -> None:
    assert not platforms.matches(platforms.parse(a), platforms.parse(b))


def test_platform_descriptors() -> None:
    assert Platform("linux", "arm64", "v8").normalized() == Platform("linux", "arm64")
    unknown = {"platform": {"os": "unknown", "architecture": "unknown"}}
    assert platforms.of_descriptor(unknown) is None
    assert platforms.of_descriptor({}) is None
    assert platforms.of_descriptor(
        {"platform": {"os": "linux", "architecture": "arm", "variant": "v7"}}) == \
        Platform("linux", "arm", "v7")
    assert platforms.describe([Platform("linux", "s390x"), Platform("linux", "amd64")]) == \
        "linux/amd64, linux/s390x"
    with pytest.raises(URIError, match="OS/ARCH"):
        platforms.parse("linux")
