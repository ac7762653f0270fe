"""One reference grammar and one platform matcher, whatever the scheme.

The same references go through every scheme that takes one, and must parse (or
fail) the same way; the same platform, however it is spelled, must pick the same
image from the same multi-platform image in a registry, an OCI layout and an OCI
archive.
"""

from __future__ import annotations

import json
from typing import Any, Callable

import pytest

from occystrap_core.context import Context
from occystrap_core.errors import URIError
from occystrap_core.pipeline import build_input
from occystrap_core.testing.images import multi_platform_blobs, sample_image, write_files, write_tar
from occystrap_core.testing.registry import RegistryServer, skopeo_args

D = "sha256:" + "ab" * 32
SCHEMES = ("registry", "docker", "dockerpush")


@pytest.mark.parametrize("text, name, tag, digest", [
    ("busybox", "docker.io/library/busybox", "latest", None),
    ("busybox:1.36", "docker.io/library/busybox", "1.36", None),
    ("user/app:v1", "docker.io/user/app", "v1", None),
    ("localhost:5000/a/b:c", "localhost:5000/a/b", "c", None),
    ("[::1]:5000/foo", "[::1]:5000/foo", "latest", None),
    (f"quay.io/org/app:v2@{D}", "quay.io/org/app", "v2", D),
    (f"busybox@{D}", "docker.io/library/busybox", None, D),
])
def test_every_scheme_reads_a_reference_the_same_way(text, name, tag, digest):
    with Context() as ctx:
        for scheme in SCHEMES:
            source = build_input(ctx, f"{scheme}://{text}")
            ref = source.ref  # type: ignore[attr-defined]
            assert (ref.name, ref.tag, ref.digest) == (name, tag, digest), scheme


@pytest.mark.parametrize("text, fragment", [
    ("busybox:tést", "invalid tag"),
    ("Upper/Case", "lowercase"),
    ("127.0.0.1:5501", "no repository"),
    ("localhost:5000", "no repository"),
    ("host:99999/app", "port 99999"),
    (f"app@{D[:-2]}", "not a valid digest"),
])
def test_every_scheme_refuses_a_bad_reference_the_same_way(text, fragment):
    with Context() as ctx:
        for scheme in SCHEMES:
            with pytest.raises(URIError, match=fragment):
                build_input(ctx, f"{scheme}://{text}")


IMAGES = [sample_image(tag="v1", architecture=arch, variant=variant, seed=i)
          for i, (arch, variant) in enumerate([("amd64", None), ("arm64", "v8"), ("arm", "v7"),
                                               ("arm", "v6")])]
# every spelling of a platform, and the image (by architecture/variant) it must pick
SPELLINGS = [
    ("linux/amd64", 0), ("linux/x86_64", 0), ("linux/amd64/v1", 0), ("linux/amd64/v3", 0),
    ("linux/arm64", 1), ("linux/arm64/v8", 1), ("linux/aarch64", 1), ("Linux/ARM64", 1),
    ("linux/arm", 2), ("linux/armhf", 2), ("linux/arm/v7", 2), ("linux/arm/7", 2),
    ("linux/arm/v6", 3), ("linux/armel", 3), ("linux/arm/v8", 2),
]


@pytest.fixture(scope="module")
def multi_platform(registry_plain: RegistryServer, tmp_path_factory: Any,
                   ) -> dict[str, str]:
    """The same four-platform image as an OCI layout, an OCI archive and in a registry."""
    import subprocess

    root = tmp_path_factory.mktemp("platforms")
    files, _ = multi_platform_blobs(IMAGES, "v1")
    write_files(str(root / "layout"), files)
    write_tar(str(root / "archive.tar"), files)
    subprocess.run(["skopeo", "--insecure-policy", "copy", "--all", "--preserve-digests",
                    *skopeo_args(registry_plain, "dest"), f"oci:{root}/layout:v1",
                    f"docker://{registry_plain.host}/platforms/multi:v1"],
                   check=True, capture_output=True)
    return {"oci-layout": f"oci-layout://{root}/layout",
            "tar": f"tar://{root}/archive.tar",
            "registry": f"registry://{registry_plain.host}/platforms/multi:v1"}


@pytest.mark.parametrize("spelling, expected", SPELLINGS)
def test_every_scheme_picks_the_same_platform(multi_platform, run_cli: Callable[..., Any],
                                              spelling, expected):
    for scheme, uri in multi_platform.items():
        result = run_cli("--insecure", "--platform", spelling, "info", "-O", "json", uri)
        assert result.exit_code == 0, (scheme, result.output)
        info = json.loads(result.stdout)
        assert info["config_digest"] == IMAGES[expected].config_digest, scheme


def test_a_platform_no_image_has_is_the_same_error_everywhere(multi_platform, run_cli,
                                                              expect_error):
    for uri in multi_platform.values():
        expect_error(run_cli("--insecure", "--platform", "linux/s390x", "info", uri),
                     "no image for platform linux/s390x", "linux/amd64", "linux/arm64")


@pytest.fixture(scope="module")
def single_platform(registry_plain: RegistryServer, tmp_path_factory: Any) -> dict[str, str]:
    """One linux/amd64 image (no index) as a docker-save archive, an OCI layout and in a
    registry."""
    import subprocess

    from occystrap_core.testing.images import write_docker_archive, write_oci_layout

    root = tmp_path_factory.mktemp("single")
    write_docker_archive(str(root / "save.tar"), [IMAGES[0]])
    write_oci_layout(str(root / "layout"), [IMAGES[0]], ["v1"])
    subprocess.run(["skopeo", "--insecure-policy", "copy", "--preserve-digests",
                    *skopeo_args(registry_plain, "dest"), f"oci:{root}/layout:v1",
                    f"docker://{registry_plain.host}/platforms/single:v1"],
                   check=True, capture_output=True)
    return {"tar": f"tar://{root}/save.tar", "oci-layout": f"oci-layout://{root}/layout",
            "registry": f"registry://{registry_plain.host}/platforms/single:v1"}


def test_a_platform_subset_takes_a_lone_image_only_of_its_platforms(
        single_platform, run_cli, expect_error, tmp_path):
    for scheme, uri in single_platform.items():
        out = tmp_path / f"{scheme}-refused"
        expect_error(run_cli("--insecure", "process", f"{uri}?platforms=linux/arm64",
                             f"oci-layout://{out}"),
                     "the image is for linux/amd64, not for linux/arm64")
        assert not out.exists(), scheme
        result = run_cli("--insecure", "process", f"{uri}?platforms=linux/arm64,linux/amd64",
                         f"oci-layout://{tmp_path / scheme}")
        assert result.exit_code == 0, (scheme, result.output)
