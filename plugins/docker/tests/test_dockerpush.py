"""dockerpush:// from a real daemon (podman), and the embedded registry on its own."""

import gzip
import hashlib
import json
import socket
import tarfile

import httpx
import pytest

from occystrap_core import mediatypes as mt
from occystrap_core.api import Image
from occystrap_core.context import Context, Settings
from occystrap_core.engine import load
from occystrap_core.errors import ImageNotFoundError
from occystrap_core.oci.platform import Platform
from occystrap_core.testing.images import sample_image
from occystrap_core.types import ResolvedURI
from occystrap_docker.certs import server_context
from occystrap_docker.dockerpush_input import PUSH_REPOSITORY, DockerPushInput
from occystrap_docker.push_registry import PushRegistry


def _sha256(data):
    return "sha256:" + hashlib.sha256(data).hexdigest()


def test_push_to_tar(tmp_path, podman, sample_in_daemon, docker_uri, process_ok, info_json):
    built = sample_in_daemon("example.com/push/app", "v1", n_layers=3, seed=21)
    info = info_json(docker_uri("example.com/push/app:v1", scheme="dockerpush", timeout="60"))
    assert (info["name"], info["tag"]) == ("example.com/push/app", "v1")
    assert info["manifest_media_type"] in mt.MANIFESTS  # the pushed manifest is kept
    assert info["config_digest"] == built["config_digest"]
    assert [l["diff_id"] for l in info["layers"]] == built["diff_ids"]
    assert {l["compression"] for l in info["layers"]} == {"gzip"}

    out = str(tmp_path / "out.tar")
    process_ok(docker_uri("example.com/push/app:v1", scheme="dockerpush"), f"tar://{out}")
    with tarfile.open(out) as tar:
        entry = json.loads(tar.extractfile("manifest.json").read())[0]
        config = tar.extractfile(entry["Config"]).read()
    assert _sha256(config) == built["config_digest"]
    assert json.loads(config)["rootfs"]["diff_ids"] == built["diff_ids"]

    # the temporary 127.0.0.1:PORT/... tag is gone, the image itself stays
    tags = podman.inspect("example.com/push/app:v1")["RepoTags"]
    assert not [t for t in tags if t.startswith("127.0.0.1")], tags


def test_push_of_missing_image(tmp_path, podman, docker_uri, run_cli, expect_error):
    expect_error(run_cli("process", docker_uri("example.com/push/absent:v1", scheme="dockerpush"),
                         f"tar://{tmp_path}/o.tar"),
                 "image example.com/push/absent:v1 not found")


def test_push_by_image_id(podman, sample_in_daemon, docker_uri, info_json):
    built = sample_in_daemon("example.com/push/byid", "v1", seed=22)
    info = info_json(docker_uri(built["config_digest"][7:19], scheme="dockerpush"))
    assert info["config_digest"] == built["config_digest"]
    assert (info["name"], info["tag"]) == (None, None)  # an ID names no image
    tags = podman.inspect("example.com/push/byid:v1")["RepoTags"]
    assert not [t for t in tags if t.startswith("127.0.0.1")], tags


@pytest.mark.parametrize("timeout", ["0", "-1", "inf", "nan", "1e400"])
def test_push_timeout_must_be_a_duration(tmp_path, timeout, docker_uri, run_cli, expect_error):
    result = run_cli("process", docker_uri("example.com/push/app:v1", "dockerpush",
                                           timeout=timeout), f"tar://{tmp_path}/o.tar")
    expect_error(result, "option 'timeout' must be a number of seconds above 0")
    assert not (tmp_path / "o.tar").exists()


def test_push_removes_the_tags_of_killed_runs(podman, sample_in_daemon, docker_uri, info_json):
    sample_in_daemon("example.com/push/swept", "v1", seed=25)
    only = sample_in_daemon("example.com/push/only", "v1", seed=26)
    live = socket.create_server(("127.0.0.1", 0))  # a run still pushing: its port answers
    dead = socket.create_server(("127.0.0.1", 0))
    dead_port = dead.getsockname()[1]
    dead.close()  # a killed run: nothing answers
    stale = f"127.0.0.1:{dead_port}/{PUSH_REPOSITORY}"
    alive = f"127.0.0.1:{live.getsockname()[1]}/{PUSH_REPOSITORY}"
    try:
        for repo, tag in ((stale, "0123456789abcdef"), (alive, "fedcba9876543210")):
            assert podman.api("POST", "/images/example.com/push/swept:v1/tag",
                              params={"repo": repo, "tag": tag}).status_code == 201
        # an image whose only name is a stale tag: removing the tag would delete it
        assert podman.api("POST", f"/images/{only['config_digest']}/tag",
                          params={"repo": stale, "tag": "aaaaaaaaaaaaaaaa"}).status_code == 201
        assert podman.api("DELETE", "/images/example.com/push/only:v1").status_code == 200
        info_json(docker_uri("example.com/push/swept:v1", scheme="dockerpush"))
        tags = podman.inspect("example.com/push/swept:v1")["RepoTags"]
        assert f"{stale}:0123456789abcdef" not in tags
        assert f"{alive}:fedcba9876543210" in tags
        assert podman.inspect(f"{stale}:aaaaaaaaaaaaaaaa")["Id"] == only["config_digest"]
    finally:
        live.close()


@pytest.fixture
def push_registry(tmp_path):
    reg = PushRegistry(str(tmp_path / "reg"), server_context(str(tmp_path)))
    reg.start()
    client = httpx.Client(base_url=f"https://127.0.0.1:{reg.port}", verify=False)
    try:
        yield reg, client
    finally:
        client.close()
        reg.stop()


def _upload(client, name, chunks, digest):
    started = client.post(f"/v2/{name}/blobs/uploads/?mount={digest}&from=other")
    assert started.status_code == 202
    location = started.headers["location"]
    for chunk in chunks:
        # a generator body goes out with chunked transfer encoding
        patched = client.patch(location, content=iter([chunk[:3], chunk[3:]]))
        assert patched.status_code == 202, patched.text
        location = patched.headers["location"]
    return client.put(location, params={"digest": digest})


def test_registry_refuses_a_patch_whose_range_is_not_its_body(push_registry):
    """416, and the refused bytes are undone: the upload completes from its Range."""
    _, client = push_registry
    data = b"layer bytes " * 100
    location = client.post("/v2/app/blobs/uploads/").headers["location"]
    wrong = client.patch(location, content=data[:10], headers={"Content-Range": "0-99"})
    assert wrong.status_code == 416
    assert client.patch(location, content=data, headers={
        "Content-Range": f"0-{len(data) - 1}"}).status_code == 202
    assert client.put(location, params={"digest": _sha256(data)}).status_code == 201


def test_registry_blob_upload(push_registry):
    _, client = push_registry
    assert client.get("/v2/").status_code == 200
    data = b"layer bytes " * 1000
    digest = _sha256(data)
    assert client.head(f"/v2/app/blobs/{digest}").status_code == 404
    done = _upload(client, "app", [data[:5000], data[5000:]], digest)
    assert done.status_code == 201
    assert done.headers["docker-content-digest"] == digest
    assert done.headers["location"] == f"/v2/app/blobs/{digest}"
    head = client.head(f"/v2/app/blobs/{digest}")
    assert (head.status_code, head.headers["content-length"]) == (200, str(len(data)))
    assert client.get(f"/v2/app/blobs/{digest}").content == data


def test_registry_rejects_a_wrong_digest(push_registry):
    _, client = push_registry
    wrong = _sha256(b"something else")
    done = _upload(client, "app", [b"actual content"], wrong)
    assert done.status_code == 400
    assert done.json()["errors"][0]["code"] == "DIGEST_INVALID"
    assert client.head(f"/v2/app/blobs/{wrong}").status_code == 404


def test_registry_manifest_and_wait(push_registry):
    reg, client = push_registry
    config, layer = b'{"rootfs":{"diff_ids":[]}}', gzip.compress(b"x", mtime=0)
    for blob in (config, layer):
        assert _upload(client, "app", [blob], _sha256(blob)).status_code == 201
    manifest = json.dumps({"schemaVersion": 2, "mediaType": mt.OCI_MANIFEST,
                           "config": {"mediaType": mt.OCI_CONFIG, "digest": _sha256(config),
                                      "size": len(config)},
                           "layers": [{"mediaType": mt.OCI_LAYER_GZIP,
                                       "digest": _sha256(layer), "size": len(layer)}]}).encode()
    assert reg.wait_manifest("app", "t1", 0.05) is None
    put = client.put("/v2/app/manifests/t1", content=manifest,
                     headers={"Content-Type": mt.OCI_MANIFEST})
    assert put.status_code == 201 and put.headers["docker-content-digest"] == _sha256(manifest)
    assert reg.wait_manifest("app", "t1", 1).data == manifest
    got = client.get(f"/v2/app/manifests/{_sha256(manifest)}")
    assert (got.content, got.headers["content-type"]) == (manifest, mt.OCI_MANIFEST)

    missing = json.dumps({"schemaVersion": 2, "config": {
        "mediaType": mt.OCI_CONFIG, "digest": _sha256(b"nope"), "size": 4}, "layers": []}).encode()
    refused = client.put("/v2/app/manifests/t2", content=missing)
    assert refused.json()["errors"][0]["code"] == "MANIFEST_BLOB_UNKNOWN"
    invalid = client.put("/v2/app/manifests/t2", content=b'{"schemaVersion": 2}')
    assert invalid.json()["errors"][0]["code"] == "MANIFEST_INVALID"


def test_registry_reflects_nothing_unchecked(push_registry):
    _, client = push_registry
    # a bogus digest parameter is refused, not echoed
    started = client.post("/v2/app/blobs/uploads/")
    bad = client.put(started.headers["location"], params={"digest": "sha256:x\r\nX-Evil: 1"})
    assert bad.status_code == 400 and "x-evil" not in bad.headers
    assert "location" not in bad.headers and "docker-content-digest" not in bad.headers
    # paths that match no strict pattern are unknown
    for path in ("/v2/App/blobs/uploads/", "/v2/app/blobs/uploads/not-a-uuid",
                 "/v2/app/blobs/sha256:abc", "/v2/../etc/manifests/x"):
        assert client.post(path).status_code in (404, 405), path
    assert client.patch("/v2/app/blobs/uploads/" + "0" * 32, content=b"x").status_code == 404
    # an odd Content-Type is not sent back
    config = b"{}"
    _upload(client, "app", [config], _sha256(config))
    manifest = json.dumps({"schemaVersion": 2, "config": {
        "mediaType": mt.DOCKER_CONFIG, "digest": _sha256(config), "size": len(config)},
        "layers": []}).encode()
    assert client.put("/v2/app/manifests/t3", content=manifest,
                      headers={"Content-Type": "not a media type"}).status_code == 201
    assert client.get("/v2/app/manifests/t3").headers["content-type"] == mt.DOCKER_MANIFEST


def test_docker_and_dockerpush_to_registry(tmp_path, podman, sample_in_daemon, docker_uri,
                                           registry_plain, process_ok, info_json):
    built = sample_in_daemon("example.com/toreg/app", "v1", n_layers=2, seed=22)
    dest = f"registry://{registry_plain.host}/docker-plugin/app"
    process_ok(docker_uri("example.com/toreg/app:v1"), f"{dest}:saved?insecure=true")
    process_ok(docker_uri("example.com/toreg/app:v1", scheme="dockerpush"),
               f"{dest}:pushed?insecure=true")
    for tag in ("saved", "pushed"):
        info = info_json(f"{dest}:{tag}?insecure=true")
        assert info["config_digest"] == built["config_digest"], tag
        assert [l["diff_id"] for l in info["layers"]] == built["diff_ids"], tag
    # what the daemon pushed reaches the registry byte for byte
    pushed = info_json(docker_uri("example.com/toreg/app:v1", scheme="dockerpush"))
    assert info_json(f"{dest}:pushed?insecure=true")["manifest_digest"] == pushed["manifest_digest"]


def test_an_index_push_gives_the_run_platform(push_registry):
    """Docker's containerd store pushes an index: the run's platform is picked from it."""
    reg, client = push_registry
    repo = PUSH_REPOSITORY
    entries = {}
    for arch in ("amd64", "arm64"):
        image = sample_image(architecture=arch, n_layers=1, seed=23)
        layer = gzip.compress(image.layers[0], mtime=0)
        for blob in (image.config, layer):
            _upload(client, repo, [blob], _sha256(blob))
        manifest = json.dumps({
            "schemaVersion": 2, "mediaType": mt.OCI_MANIFEST,
            "config": {"mediaType": mt.OCI_CONFIG, "digest": image.config_digest,
                       "size": len(image.config)},
            "layers": [{"mediaType": mt.OCI_LAYER_GZIP, "digest": _sha256(layer),
                        "size": len(layer)}]}).encode()
        client.put(f"/v2/{repo}/manifests/{_sha256(manifest)}", content=manifest,
                   headers={"Content-Type": mt.OCI_MANIFEST})
        entries[arch] = (manifest, image)
    index = json.dumps({"schemaVersion": 2, "mediaType": mt.OCI_INDEX, "manifests": [
        {"mediaType": mt.OCI_MANIFEST, "digest": _sha256(m), "size": len(m),
         "platform": {"os": "linux", "architecture": arch}} for arch, (m, _) in entries.items()
    ] + [{"mediaType": mt.OCI_MANIFEST, "digest": _sha256(b"not pushed"), "size": 1,
          "platform": {"os": "linux", "architecture": "s390x"}}]}).encode()
    client.put(f"/v2/{repo}/manifests/tag1", content=index, headers={"Content-Type": mt.OCI_INDEX})

    def pick(arch: str) -> Image:
        uri = ResolvedURI(scheme="dockerpush", target="example.com/multi:v1", raw="",
                          options={"socket": "/nonexistent.sock", "timeout": None})
        ctx = Context(Settings(platform=Platform("linux", arch)))
        source = DockerPushInput(uri, ctx)
        source._registry = reg  # as if the daemon had just pushed tag1
        source._top = source._pushed(reg.manifest(repo, "tag1"))
        return load(ctx, source).image

    arm = pick("arm64")
    assert arm.manifest == entries["arm64"][0]
    assert (arm.platform.architecture, arm.config) == ("arm64", entries["arm64"][1].config)
    assert arm.diff_ids == entries["arm64"][1].diff_ids
    # the s390x image the index lists was not pushed: it is not offered
    with pytest.raises(ImageNotFoundError, match=r"no image for platform linux/s390x "
                                                 r"\(available: linux/amd64, linux/arm64\)"):
        pick("s390x")


def test_push_by_id_of_an_image_without_a_name_keeps_it(tmp_path, podman, sample_in_daemon,
                                                        docker_uri, run_cli, expect_error):
    # a push needs a name; removing the only name an image has deletes the image
    first = sample_in_daemon("example.com/push/dangling", "v1", seed=23)
    sample_in_daemon("example.com/push/dangling", "v1", seed=24)  # takes the name over
    image_id = first["config_digest"]
    assert podman.inspect(image_id)["RepoTags"] in ([], None)
    expect_error(run_cli("info", docker_uri(image_id[7:19], scheme="dockerpush")),
                 f"dockerpush:// cannot push image {image_id}: it has no name",
                 f"read it with docker://{image_id[7:19]}")
    assert podman.inspect(image_id) is not None, "the daemon's image was deleted"
    assert [t for t in podman.inspect(image_id)["RepoTags"] or () if "occystrap-push" in t] == []
