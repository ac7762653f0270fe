"""The one reference grammar, held to distribution/reference's own test cases.

The tables below are those of reference_test.go (TestReferenceParse) and
normalize_test.go (TestValidateReferenceName, TestValidateRemoteName,
TestParseRepositoryInfo, TestNormalizedSplitHostname), with occystrap's one
deliberate difference marked: a reference naming a registry but no repository is
an error, not a Docker Hub image of that name.
"""

from __future__ import annotations

import pytest

from occystrap_core.errors import URIError
from occystrap_core.oci.reference import Reference, parse, same_registry

F64 = "f" * 64
F128 = "f" * 128
D = f"sha256:{F64}"

# (input, name, domain, tag, digest) as reference.Parse sees them: not normalised
PARSE = [
    ("test_com", "test_com", "", None, None),
    ("test.com:tag", "test.com", "", "tag", None),
    ("test.com:5000", "test.com", "", "5000", None),
    ("test.com/repo:tag", "test.com/repo", "test.com", "tag", None),
    ("test:5000/repo", "test:5000/repo", "test:5000", None, None),
    ("test:5000/repo:tag", "test:5000/repo", "test:5000", "tag", None),
    (f"test:5000/repo@{D}", "test:5000/repo", "test:5000", None, D),
    (f"test:5000/repo:tag@{D}", "test:5000/repo", "test:5000", "tag", D),
    ("lowercase:Uppercase", "lowercase", "", "Uppercase", None),
    ("a/" * 127 + "a:tag-puts-this-over-max", "a/" * 127 + "a", "", "tag-puts-this-over-max",
     None),
    ("sub-dom1.foo.com/bar/baz/quux", "sub-dom1.foo.com/bar/baz/quux", "sub-dom1.foo.com",
     None, None),
    ("sub-dom1.foo.com/bar/baz/quux:some-long-tag", "sub-dom1.foo.com/bar/baz/quux",
     "sub-dom1.foo.com", "some-long-tag", None),
    ("b.gcr.io/test.example.com/my-app:test.example.com", "b.gcr.io/test.example.com/my-app",
     "b.gcr.io", "test.example.com", None),
    ("xn--n3h.com/myimage:xn--n3h.com", "xn--n3h.com/myimage", "xn--n3h.com", "xn--n3h.com",
     None),
    (f"xn--7o8h.com/myimage:xn--7o8h.com@sha512:{F128}", "xn--7o8h.com/myimage",
     "xn--7o8h.com", "xn--7o8h.com", f"sha512:{F128}"),
    ("foo_bar.com:8080", "foo_bar.com", "", "8080", None),
    ("foo/foo_bar.com:8080", "foo/foo_bar.com", "", "8080", None),
    ("192.168.1.1", "192.168.1.1", "", None, None),
    ("192.168.1.1:tag", "192.168.1.1", "", "tag", None),
    ("192.168.1.1:5000", "192.168.1.1", "", "5000", None),
    ("192.168.1.1/repo", "192.168.1.1/repo", "192.168.1.1", None, None),
    ("192.168.1.1:5000/repo", "192.168.1.1:5000/repo", "192.168.1.1:5000", None, None),
    ("192.168.1.1:5000/repo:5050", "192.168.1.1:5000/repo", "192.168.1.1:5000", "5050", None),
    ("[2001:db8::1]/repo", "[2001:db8::1]/repo", "[2001:db8::1]", None, None),
    ("[2001:db8:1:2:3:4:5:6]/repo:tag", "[2001:db8:1:2:3:4:5:6]/repo", "[2001:db8:1:2:3:4:5:6]",
     "tag", None),
    ("[2001:db8::1]:5000/repo", "[2001:db8::1]:5000/repo", "[2001:db8::1]:5000", None, None),
    ("[2001:db8::1]:5000/repo:tag", "[2001:db8::1]:5000/repo", "[2001:db8::1]:5000", "tag",
     None),
    (f"[2001:db8::1]:5000/repo@{D}", "[2001:db8::1]:5000/repo", "[2001:db8::1]:5000", None, D),
    (f"[2001:db8::1]:5000/repo:tag@{D}", "[2001:db8::1]:5000/repo", "[2001:db8::1]:5000",
     "tag", D),
    ("[2001:db8::]:5000/repo", "[2001:db8::]:5000/repo", "[2001:db8::]:5000", None, None),
    ("[::1]:5000/repo", "[::1]:5000/repo", "[::1]:5000", None, None),
]

INVALID = [
    "", ":justtag", f"@{D}", "repo@sha256:" + "f" * 34, f"validname@invaliddigest:{F64}",
    "Uppercase:tag", "test:5000/Uppercase/lowercase:tag", "a/" * 128 + "a:tag", "aa/asdf$$^/aa",
    "[2001:db8::1]", "[2001:db8::1]:5000", "[2001:db8::1]:tag", "[fe80::1%eth0]:5000/repo",
    "[fe80::1%@invalidzone]:5000/repo",
    # normalize_test.go: invalid repository names
    "https://github.com/docker/docker", "docker/Docker", "-docker", "-docker/docker",
    "-docker.io/docker/docker", "docker///docker", "docker.io/docker/Docker",
    "docker.io/docker///docker", "[fc00::1]", "[fc00::1]:5000", "fc00::1:5000/debian",
    "[fe80::1%eth0]:5000/debian", "[2001:db8:3:4::192.0.2.33]:5000/debian",
    "docker-/docker", "-docker-/docker", "____/____", "_docker/_docker", "dock..er/docker",
    "dock_.er/docker", "dock-.er/docker", "docker/",
    "this_is_not_a_valid_namespace_because_its_lenth_is_greater_than_255" * 4 + "/docker",
    # occystrap: ASCII tags only; ports in range
    "busybox:tést", "host:0/repo", "host:99999/repo",
]

# normalize_test.go TestValidateReferenceName / TestValidateRemoteName: valid, normalised
VALID = [
    "docker/docker", "library/debian", "debian", "docker.io/docker/docker",
    "docker.io/library/debian", "docker.io/debian", "index.docker.io/docker/docker",
    "index.docker.io/library/debian", "index.docker.io/debian", "127.0.0.1:5000/docker/docker",
    "127.0.0.1:5000/library/debian", "127.0.0.1:5000/debian", "192.168.0.1:8/debian",
    "192.168.0.2:25000/debian", "thisisthesongthatneverendsitgoesonandonandonthisisthesongthatnev",
    "[fc00::1]:5000/docker", "[fc00::1]:5000/docker/docker",
    "[fc00:1:2:3:4:5:6:7]:5000/library/debian",
    "docker.io/1a3f5e7d9c1b3a5f7e9d1c3b5a7f9e1d3c5b7a9f1e3d5d7c9b1a3f5e7d9c1b3a",
    "Docker/docker", "DOCKER/docker", "docker-rules/docker", "docker---rules/docker",
    "doc/docker", "d/docker", "jess/t", "dock__er/docker",
]

# TestParseRepositoryInfo: every spelling gives the full name, domain and path
REPOSITORY_INFO = [
    (["fooo/bar", "docker.io/fooo/bar", "index.docker.io/fooo/bar"], "docker.io/fooo/bar",
     "docker.io", "fooo/bar", "fooo/bar"),
    (["ubuntu", "docker.io/library/ubuntu", "library/ubuntu"], "docker.io/library/ubuntu",
     "docker.io", "library/ubuntu", "ubuntu"),
    (["nonlibrary/ubuntu", "docker.io/nonlibrary/ubuntu"], "docker.io/nonlibrary/ubuntu",
     "docker.io", "nonlibrary/ubuntu", "nonlibrary/ubuntu"),
    (["other/library", "docker.io/other/library"], "docker.io/other/library", "docker.io",
     "other/library", "other/library"),
    (["127.0.0.1:8000/private/moonbase"], "127.0.0.1:8000/private/moonbase", "127.0.0.1:8000",
     "private/moonbase", "127.0.0.1:8000/private/moonbase"),
    (["127.0.0.1:8000/privatebase"], "127.0.0.1:8000/privatebase", "127.0.0.1:8000",
     "privatebase", "127.0.0.1:8000/privatebase"),
    (["example.com/private/moonbase"], "example.com/private/moonbase", "example.com",
     "private/moonbase", "example.com/private/moonbase"),
    (["example.com:8000/privatebasee"], "example.com:8000/privatebasee", "example.com:8000",
     "privatebasee", "example.com:8000/privatebasee"),
    (["ubuntu-12.04-base", "docker.io/library/ubuntu-12.04-base",
      "index.docker.io/library/ubuntu-12.04-base"], "docker.io/library/ubuntu-12.04-base",
     "docker.io", "library/ubuntu-12.04-base", "ubuntu-12.04-base"),
    (["foo", "docker.io/library/foo", "docker.io/foo"], "docker.io/library/foo", "docker.io",
     "library/foo", "foo"),
    (["library/foo/bar", "docker.io/library/foo/bar"], "docker.io/library/foo/bar", "docker.io",
     "library/foo/bar", "library/foo/bar"),
    (["store/foo/bar", "docker.io/store/foo/bar"], "docker.io/store/foo/bar", "docker.io",
     "store/foo/bar", "store/foo/bar"),
    (["Foo/bar"], "Foo/bar", "Foo", "bar", "Foo/bar"),
    (["FOO/bar"], "FOO/bar", "FOO", "bar", "FOO/bar"),
    (["test_com/foo"], "docker.io/test_com/foo", "docker.io", "test_com/foo", "test_com/foo"),
    (["test.com:8080/foo"], "test.com:8080/foo", "test.com:8080", "foo", "test.com:8080/foo"),
    (["test-com:8080/foo"], "test-com:8080/foo", "test-com:8080", "foo", "test-com:8080/foo"),
    (["xn--n3h.com:18080/foo"], "xn--n3h.com:18080/foo", "xn--n3h.com:18080", "foo",
     "xn--n3h.com:18080/foo"),
]


@pytest.mark.parametrize("text, name, domain, tag, digest", PARSE)
def test_parse_as_written(text, name, domain, tag, digest):
    ref = parse(text, normalize=False, default_tag=False)
    assert (ref.name, ref.domain, ref.tag, ref.digest) == (name, domain, tag, digest)
    assert str(ref) == text


@pytest.mark.parametrize("text", INVALID)
def test_invalid(text):
    with pytest.raises(URIError):
        parse(text)


@pytest.mark.parametrize("text", VALID)
def test_valid_normalised(text):
    ref = parse(text)
    assert parse(str(ref)) == ref


@pytest.mark.parametrize("spellings, full, domain, path, familiar", REPOSITORY_INFO)
def test_repository_info(spellings, full, domain, path, familiar):
    for spelling in spellings:
        ref = parse(spelling, default_tag=False)
        assert (ref.name, ref.domain, ref.path) == (full, domain, path), spelling
        assert ref.familiar == familiar


def test_tag_and_digest_together():
    ref = parse("busybox:latest@sha256:86e0e091d0da6bde2456dbb48306f3956bbeb2eae1b5b9a43045843"
                "f69fe4aaa")
    assert str(ref) == ("docker.io/library/busybox:latest@sha256:86e0e091d0da6bde2456dbb4830"
                        "6f3956bbeb2eae1b5b9a43045843f69fe4aaa")
    assert ref.familiar == str(ref).removeprefix("docker.io/library/")
    assert ref.ref == ref.digest


@pytest.mark.parametrize("text", ["127.0.0.1:5501", "localhost", "localhost:5000",
                                  "registry.example:5000", "192.168.1.1:5000", "[::1]:5000"])
def test_a_registry_without_a_repository_is_an_error(text):
    """Docker reads 127.0.0.1:5501 as the Docker Hub image library/127.0.0.1, tag 5501:
    credentials for that registry would go to Docker Hub. occystrap refuses it."""
    with pytest.raises(URIError, match="no repository"):
        parse(text)


def test_defaults_and_properties():
    hub = parse("busybox")
    assert (hub.name, hub.tag, hub.api_host, hub.ref) == (
        "docker.io/library/busybox", "latest", "registry-1.docker.io", "latest")
    assert parse("host:5000/app", default_tag=False).tag is None
    pinned = parse(f"host:5000/app:v2@{D}")
    assert (pinned.api_host, pinned.ref) == ("host:5000", D)
    assert pinned.with_digest(D) == pinned
    assert Reference("docker.io", "x/y", "1").familiar == "x/y:1"


@pytest.mark.parametrize("text, fragment", [
    ("host/App", "lowercase"), ("host/app:-x", "invalid tag"), ("busybox:tést", "invalid tag"),
    ("host/app@sha256:abc", "not a valid digest"), ("host:99999/app", "port 99999"),
    ("bad_host:5000/app", "invalid registry host"), ("host/a..b", "invalid repository path"),
])
def test_errors_say_what_is_wrong(text, fragment):
    with pytest.raises(URIError, match=fragment):
        parse(text)


def test_same_registry():
    assert same_registry("docker.io", "index.docker.io")
    assert same_registry("Registry-1.Docker.io", "docker.io")
    assert not same_registry("quay.io", "docker.io")
