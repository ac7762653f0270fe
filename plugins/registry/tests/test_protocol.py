"""Protocol details against an in-memory registry under the real transport layers:
chunked uploads, manifest kinds, platform selection, foreign layers, verification."""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import random
import tarfile
import threading
import time
import uuid
from typing import Any

import httpx
import pytest

import occystrap_registry.plugin as registry_plugin
import occystrap_tarball.plugin as tarball_plugin
from occystrap_core import mediatypes as mt
from occystrap_core.api import Image, ImageInput, Layer
from occystrap_core.context import Context
from occystrap_core.engine import load
from occystrap_core.errors import (
    CorruptImageError,
    DigestMismatchError,
    ImageNotFoundError,
    TransportError,
    UnsupportedError,
)
from occystrap_core.oci.platform import Platform
from occystrap_core.pipeline import build_input, build_output, run
from occystrap_core.testing.http import MockHTTP, make_context

HOST = "reg.example"
MiB = 1024 * 1024


def sha(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


class FakeRegistry:
    """Just enough of the distribution API; ``max_body`` answers 413 to larger bodies."""

    def __init__(self, max_body: int | None = None, chunk_min: int = 0):
        self.max_body = max_body
        self.chunk_min = chunk_min
        self.blobs: dict[str, bytes] = {}
        self.manifests: dict[tuple[str, str], tuple[bytes, str]] = {}
        self.uploads: dict[str, bytearray] = {}
        self.external: dict[str, bytes] = {}  # full URL -> body (foreign layers)
        self.log: list[tuple[str, str, int]] = []  # method, path, body length
        self.chunks: list[int] = []  # sizes of accepted PATCH bodies

    def add_manifest(self, repo: str, ref: str, data: bytes, media_type: str) -> str:
        self.manifests[(repo, ref)] = self.manifests[(repo, sha(data))] = (data, media_type)
        return sha(data)

    def add_blob(self, data: bytes) -> str:
        self.blobs[sha(data)] = data
        return sha(data)

    def __call__(self, request: httpx.Request) -> httpx.Response:
        body = request.read()
        self.log.append((request.method, request.url.path, len(body)))
        url = str(request.url.copy_with(query=None))
        if url in self.external:
            return httpx.Response(200, content=self.external[url])
        repo, _, rest = request.url.path.removeprefix("/v2/").partition("/manifests/")
        if rest:
            return self._manifest(request, repo, rest, body)
        repo, _, rest = request.url.path.removeprefix("/v2/").partition("/blobs/")
        if rest.startswith("uploads"):
            return self._upload(request, repo, rest.removeprefix("uploads/"), body)
        if rest in self.blobs:
            data = self.blobs[rest]
            return httpx.Response(200, content=b"" if request.method == "HEAD" else data,
                                  headers={"Content-Length": str(len(data))})
        return httpx.Response(404, json={"errors": [{"code": "BLOB_UNKNOWN", "message": "no"}]})

    def _manifest(self, request: httpx.Request, repo: str, ref: str, body: bytes) -> httpx.Response:
        if request.method == "PUT":
            self.add_manifest(repo, ref, body, request.headers["Content-Type"])
            return httpx.Response(201, headers={"Docker-Content-Digest": sha(body)})
        if (repo, ref) not in self.manifests:
            return httpx.Response(404, json={"errors": [{"code": "MANIFEST_UNKNOWN",
                                                         "message": "manifest unknown"}]})
        data, media_type = self.manifests[(repo, ref)]
        return httpx.Response(200, content=b"" if request.method == "HEAD" else data,
                              headers={"Content-Type": media_type,
                                       "Docker-Content-Digest": sha(data)})

    def _upload(self, request: httpx.Request, repo: str, uid: str, body: bytes) -> httpx.Response:
        if request.method == "POST":
            mount = request.url.params.get("mount")
            if mount and mount in self.blobs:
                return httpx.Response(201)
            uid = uuid.uuid4().hex
            self.uploads[uid] = bytearray()
            headers = {"Location": f"/v2/{repo}/blobs/uploads/{uid}?_state=x"}
            if self.chunk_min:
                headers["OCI-Chunk-Min-Length"] = str(self.chunk_min)
            return httpx.Response(202, headers=headers)
        if self.max_body is not None and len(body) > self.max_body:
            return httpx.Response(413)
        if uid not in self.uploads:
            return httpx.Response(404, json={"errors": [{"code": "BLOB_UPLOAD_UNKNOWN"}]})
        if request.method == "DELETE":
            del self.uploads[uid]
            return httpx.Response(204)
        buf = self.uploads[uid]
        if request.method == "PATCH":
            start, _, end = request.headers["Content-Range"].partition("-")
            assert int(start) == len(buf) and int(end) == len(buf) + len(body) - 1
            buf += body
            self.chunks.append(len(body))
            return httpx.Response(202, headers={"Location": f"/v2/{repo}/blobs/uploads/{uid}",
                                                "Range": f"0-{len(buf) - 1}"})
        if request.method == "PUT":
            buf += body
            digest = request.url.params["digest"]
            if sha(bytes(buf)) != digest:
                return httpx.Response(400, json={"errors": [{"code": "DIGEST_INVALID"}]})
            self.blobs[digest] = bytes(self.uploads.pop(uid))
            return httpx.Response(201, headers={"Docker-Content-Digest": digest})
        return httpx.Response(204)


class MemoryInput(ImageInput):
    def __init__(self, image: Image, blobs: dict[str, bytes]):
        self._image = image
        self.blobs = blobs

    def image(self) -> Image:
        return self._image

    def open_layer(self, layer: Layer):  # type: ignore[override]
        return io.BytesIO(self.blobs[layer.digest or ""])


def memory_image(tars: list[bytes], compress: bool) -> tuple[Image, dict[str, bytes]]:
    config = json.dumps({"os": "linux", "architecture": "amd64",
                         "rootfs": {"type": "layers", "diff_ids": [sha(t) for t in tars]}}).encode()
    blobs, layers = {}, []
    for i, tar in enumerate(tars):
        blob = gzip.compress(tar, mtime=0) if compress else tar
        blobs[sha(blob)] = blob
        layers.append(Layer(i, mt.OCI_LAYER_GZIP if compress else mt.OCI_LAYER_TAR, sha(blob),
                            len(blob), diff_id=sha(tar)))
    image = Image("other.example/src", "v1", config, tuple(layers), mt.OCI_CONFIG)
    manifest, media_type = image.build_manifest()
    return Image("other.example/src", "v1", config, tuple(layers), mt.OCI_CONFIG, manifest,
                 media_type), blobs


def context(fake: Any, **settings: Any) -> Context:
    return make_context(MockHTTP(fake), registry_plugin, tarball_plugin, **settings)


def push(fake: FakeRegistry, image: Image, blobs: dict[str, bytes], dest: str, **settings: Any):
    with context(fake, **settings) as ctx:
        output = build_output(ctx, dest)
        _, result = run(ctx, MemoryInput(image, blobs), output)
        return result, ctx.stats


def test_passthrough_is_one_streamed_put_per_blob() -> None:
    fake = FakeRegistry()
    image, blobs = memory_image([b"a" * 3 * MiB, b"b" * 1000], compress=True)
    result, stats = push(fake, image, blobs, f"registry://{HOST}/app:v1")
    assert result.manifest_digest == image.manifest_digest  # the source manifest, unchanged
    assert fake.manifests[("app", "v1")][0] == image.manifest
    puts = [entry for entry in fake.log if entry[0] == "PUT" and "/uploads/" in entry[1]]
    assert len(puts) == 3  # two layers and the config, no PATCH
    assert not [entry for entry in fake.log if entry[0] == "PATCH"]
    for digest, blob in blobs.items():
        assert fake.blobs[digest] == blob
    assert (stats["layers"], stats["skipped"]) == (2, 0)


def test_413_falls_back_to_chunks_and_remembers() -> None:
    fake = FakeRegistry(max_body=MiB)
    image, blobs = memory_image([bytes(range(256)) * 12 * 1024, b"x" * 2 * MiB], compress=False)
    result, _ = push(fake, image, blobs, f"registry://{HOST}/app:v1?compression=none", parallel=1)
    for digest, blob in blobs.items():
        assert fake.blobs[digest] == blob
    assert fake.chunks and all(0 < n <= MiB for n in fake.chunks)
    big_puts = [n for method, path, n in fake.log if method == "PUT" and n > MiB]
    assert len(big_puts) == 1  # only the first blob tried a monolithic PUT
    assert result.manifest_digest == sha(fake.manifests[("app", "v1")][0])


def test_chunk_min_length_means_patch() -> None:
    fake = FakeRegistry(chunk_min=5 * MiB)
    image, blobs = memory_image([random.Random(1).randbytes(12 * MiB)], compress=True)
    push(fake, image, blobs, f"registry://{HOST}/app:v1")
    blob = blobs[image.layers[0].digest or ""]
    assert fake.blobs[image.layers[0].digest or ""] == blob
    assert fake.chunks == [len(blob)]  # one chunk of at least the minimum, never one PUT
    assert not [n for method, path, n in fake.log if method == "PUT" and n > MiB]


def test_uncompressed_layers_are_gzipped_and_the_manifest_rebuilt() -> None:
    fake = FakeRegistry()
    tars = [b"t" * 100_000, b"u" * 50_000]
    image, blobs = memory_image(tars, compress=False)
    result, _ = push(fake, image, blobs, f"registry://{HOST}/app:v1")
    manifest = json.loads(fake.manifests[("app", "v1")][0])
    assert manifest["mediaType"] == mt.OCI_MANIFEST  # OCI stays OCI
    for desc, tar in zip(manifest["layers"], tars, strict=True):
        assert desc["mediaType"] == mt.OCI_LAYER_GZIP
        assert gzip.decompress(fake.blobs[desc["digest"]]) == tar
    assert result.manifest_digest != image.manifest_digest


def test_existing_blobs_are_skipped() -> None:
    fake = FakeRegistry()
    image, blobs = memory_image([b"a" * 1000, b"b" * 1000], compress=True)
    fake.add_blob(blobs[image.layers[0].digest or ""])
    _, stats = push(fake, image, blobs, f"registry://{HOST}/app:v1")
    assert (stats["layers"], stats["skipped"], stats["mounted"]) == (1, 1, 0)


def test_warm_no_op_does_no_blob_work() -> None:
    fake = FakeRegistry()
    image, blobs = memory_image([b"a" * 1000, b"b" * 1000], compress=True)
    push(fake, image, blobs, f"registry://{HOST}/app:v1")
    fake.log.clear()
    result, stats = push(fake, image, blobs, f"registry://{HOST}/app:v1")
    assert fake.log == [("HEAD", "/v2/app/manifests/v1", 0)]
    assert (stats["layers"], stats["skipped"]) == (0, 2)
    assert result.manifest_digest == image.manifest_digest


# --- pulling -------------------------------------------------------------------------

def seed(fake: FakeRegistry, arch: str = "amd64", variant: str | None = None,
         foreign_urls: tuple[str, ...] | None = None) -> tuple[bytes, bytes, bytes]:
    tar = f"layer for {arch}".encode() * 100
    blob = gzip.compress(tar, mtime=0)
    config = json.dumps({"os": "linux", "architecture": arch,
                         "rootfs": {"type": "layers", "diff_ids": [sha(tar)]}}).encode()
    fake.add_blob(config)
    layer: dict[str, Any] = {"mediaType": mt.OCI_LAYER_GZIP, "digest": sha(blob),
                             "size": len(blob)}
    if foreign_urls is not None:
        layer["mediaType"] = mt.OCI_LAYER_ND_GZIP
        layer["urls"] = list(foreign_urls)
        for url in foreign_urls:
            fake.external[url] = blob
    else:
        fake.add_blob(blob)
    manifest = json.dumps({"schemaVersion": 2, "mediaType": mt.OCI_MANIFEST,
                           "config": {"mediaType": mt.OCI_CONFIG, "digest": sha(config),
                                      "size": len(config)},
                           "layers": [layer]}).encode()
    return manifest, config, tar


def index_of(entries: list[tuple[bytes, dict | None]], media_type: str = mt.OCI_INDEX) -> bytes:
    return json.dumps({"schemaVersion": 2, "mediaType": media_type, "manifests": [
        {"mediaType": json.loads(m).get("mediaType", mt.OCI_INDEX), "digest": sha(m),
         "size": len(m), **({"platform": p} if p else {})} for m, p in entries]}).encode()


def pull(fake: FakeRegistry, uri: str, **settings: Any) -> Image:
    with context(fake, **settings) as ctx, build_input(ctx, uri) as source:
        loaded = load(ctx, source)
        for layer in loaded.image.layers:
            with loaded.open_layer(layer) as f:
                assert sha(f.read()) == layer.digest
        return loaded.image


def test_platform_selection_through_nested_indexes() -> None:
    fake = FakeRegistry()
    amd, _, _ = seed(fake, "amd64")
    arm, _, _ = seed(fake, "arm64")
    for m in (amd, arm):
        fake.add_manifest("app", sha(m), m, mt.OCI_MANIFEST)
    inner = index_of([(amd, {"os": "linux", "architecture": "amd64"}),
                      (arm, {"os": "linux", "architecture": "arm64", "variant": "v8"}),
                      (amd, {"os": "unknown", "architecture": "unknown"})])
    fake.add_manifest("app", sha(inner), inner, mt.OCI_INDEX)
    outer = index_of([(inner, None)])
    fake.add_manifest("app", "v1", outer, mt.OCI_INDEX)

    image = pull(fake, f"registry://{HOST}/app:v1", platform=Platform("linux", "arm64"))
    assert image.manifest == arm and image.manifest_media_type == mt.OCI_MANIFEST
    assert image.platform == Platform("linux", "arm64", "v8")
    image = pull(fake, f"registry://{HOST}/app:v1?platform=linux/x86_64")
    assert image.manifest == amd

    with pytest.raises(ImageNotFoundError, match=r"linux/s390x \(available: linux/amd64, "
                                                 r"linux/arm64/v8\)"):
        pull(fake, f"registry://{HOST}/app:v1?platform=linux/s390x")


def nested_index(fake: FakeRegistry) -> dict[str, bytes]:
    """app:v1 = [inner index [amd64, arm64/v8], s390x image]."""
    made = {arch: seed(fake, arch)[0] for arch in ("amd64", "arm64", "s390x")}
    for m in made.values():
        fake.add_manifest("app", sha(m), m, mt.OCI_MANIFEST)
    made["inner"] = index_of([(made["amd64"], {"os": "linux", "architecture": "amd64"}),
                              (made["arm64"], {"os": "linux", "architecture": "arm64",
                                               "variant": "v8"})])
    fake.add_manifest("app", sha(made["inner"]), made["inner"], mt.OCI_INDEX)
    made["outer"] = index_of([(made["inner"], None),
                              (made["s390x"], {"os": "linux", "architecture": "s390x"})])
    fake.add_manifest("app", "v1", made["outer"], mt.OCI_INDEX)
    return made


class NoMountRegistry(FakeRegistry):
    """Ignores ``mount``: every POST starts an upload (as ECR does)."""

    def __call__(self, request: httpx.Request) -> httpx.Response:
        if request.method == "POST" and "mount" in request.url.params:
            request = httpx.Request("POST", request.url.copy_with(query=None),
                                    headers=request.headers)
        return super().__call__(request)


def test_a_registry_ignoring_mounts_is_asked_before_anything_is_uploaded() -> None:
    fake = NoMountRegistry()
    nested_index(fake)
    with context(fake, all_platforms=True) as ctx, \
            build_input(ctx, f"registry://{HOST}/app:v1") as source:
        run(ctx, source, build_output(ctx, f"registry://{HOST}/copy:v1"))
    # the mount of each layer and config started an upload instead: the HEAD the
    # mount was to save found the blob there, and the session was let go unused
    assert not [e for e in fake.log if e[0] in ("PUT", "PATCH") and "/blobs/uploads/" in e[1]]
    assert len([e for e in fake.log if e[0] == "DELETE"]) == 6
    assert ctx.stats["skipped"] == 3 and ctx.stats["mounted"] == 0


def test_all_platforms_copies_nested_indexes_whole(tmp_path) -> None:
    fake = FakeRegistry()
    made = nested_index(fake)
    # verify=False: the output's checks for verify() would HEAD the blobs as each
    # manifest goes up
    with context(fake, all_platforms=True, verify=False) as ctx, \
            build_input(ctx, f"registry://{HOST}/app:v1") as source:
        _, result = run(ctx, source, build_output(ctx, f"registry://{HOST}/copy:v1"))
    assert result.manifest_digest == sha(made["outer"])
    assert fake.manifests[("copy", "v1")][0] == made["outer"]  # byte for byte, under the tag
    for name in ("inner", "amd64", "arm64", "s390x"):  # the rest by digest only
        assert fake.manifests[("copy", sha(made[name]))][0] == made[name]
    assert len([key for key in fake.manifests if key[0] == "copy"]) == 6  # outer twice
    # the source is on this registry: each blob, configs too, is mounted from it with
    # one request, without asking first whether the copy holds it (the fake answers
    # yes to both)
    assert ctx.stats["mounted"] == 3 and ctx.stats["skipped"] == 0
    assert not [e for e in fake.log if e[0] == "HEAD" and "/copy/blobs/" in e[1]]
    mounts = [e for e in fake.log if e[0] == "POST" and "/copy/blobs/uploads/" in e[1]]
    assert len(mounts) == 6

    with context(fake, all_platforms=True) as ctx, \
            build_input(ctx, f"registry://{HOST}/app:v1") as source:
        run(ctx, source, build_output(ctx, f"oci-layout://{tmp_path / 'layout'}"))
    listed = json.loads((tmp_path / "layout" / "index.json").read_text())["manifests"]
    assert [e["digest"] for e in listed] == [sha(made["outer"])]  # nested ones are blobs
    for name in ("inner", "amd64", "arm64", "s390x"):
        assert (tmp_path / "layout" / "blobs" / "sha256" / sha(made[name])[7:]).read_bytes() \
            == made[name]


def test_choosing_platforms_in_nested_indexes_is_refused() -> None:
    fake = FakeRegistry()
    nested_index(fake)
    with context(fake) as ctx, pytest.raises(UnsupportedError, match="--all-platforms"), \
            build_input(ctx, f"registry://{HOST}/app:v1?platforms=linux/s390x") as source:
        run(ctx, source, build_output(ctx, f"registry://{HOST}/copy:v1"))


def test_docker_manifest_list_and_layer_metadata() -> None:
    fake = FakeRegistry()
    manifest, config, tar = seed(fake, "amd64")
    doc = json.loads(manifest)
    doc["mediaType"] = mt.DOCKER_MANIFEST
    doc["config"]["mediaType"] = mt.DOCKER_CONFIG
    doc["layers"][0]["mediaType"] = mt.DOCKER_LAYER_GZIP
    manifest = json.dumps(doc).encode()
    fake.add_manifest("lib/app", sha(manifest), manifest, mt.DOCKER_MANIFEST)
    listing = index_of([(manifest, {"os": "linux", "architecture": "amd64"})],
                       mt.DOCKER_MANIFEST_LIST)
    fake.add_manifest("lib/app", "v1", listing, mt.DOCKER_MANIFEST_LIST)
    image = pull(fake, f"registry://{HOST}/lib/app:v1", platform=Platform("linux", "amd64"))
    assert image.family == "docker" and image.config == config
    assert image.layers[0].diff_id == sha(tar)
    assert image.layers[0].media_type == mt.DOCKER_LAYER_GZIP
    assert image.name == f"{HOST}/lib/app" and image.tag == "v1"


def test_schema1_is_unsupported() -> None:
    fake = FakeRegistry()
    fake.add_manifest("old", "v1", json.dumps({"schemaVersion": 1, "name": "old"}).encode(),
                      mt.DOCKER_SCHEMA1_SIGNED)
    with pytest.raises(UnsupportedError, match="schema 1"):
        pull(fake, f"registry://{HOST}/old:v1")


def test_digest_reference_is_verified() -> None:
    fake = FakeRegistry()
    manifest, _, _ = seed(fake)
    wrong = "sha256:" + "0" * 64
    fake.manifests[("app", wrong)] = (manifest, mt.OCI_MANIFEST)  # a lying registry
    with pytest.raises(DigestMismatchError, match="digest mismatch"):
        pull(fake, f"registry://{HOST}/app@{wrong}")


def test_foreign_layers_come_from_their_urls_and_are_never_pushed() -> None:
    fake = FakeRegistry()
    url = "https://cdn.example/layer.tar.gz"
    manifest, _, _ = seed(fake, foreign_urls=(url,))
    fake.add_manifest("win", "v1", manifest, mt.OCI_MANIFEST)
    image = pull(fake, f"registry://{HOST}/win:v1")
    assert image.layers[0].foreign and image.layers[0].urls == (url,)
    assert any(path == "/layer.tar.gz" for _, path, _ in fake.log)
    assert not any("/v2/win/blobs/" + (image.layers[0].digest or "") == p for _, p, _ in fake.log)

    with context(fake) as ctx, build_input(ctx, f"registry://{HOST}/win:v1") as source:
        _, result = run(ctx, source, build_output(ctx, f"registry://{HOST}/win-copy:v1"))
    assert fake.manifests[("win-copy", "v1")][0] == manifest
    assert ctx.stats["skipped"] == 1

    doc = json.loads(manifest)
    del doc["layers"][0]["urls"]
    bare = json.dumps(doc).encode()
    fake.add_manifest("nourl", "v1", bare, mt.OCI_MANIFEST)
    fake.add_blob(fake.external[url])
    image = pull(fake, f"registry://{HOST}/nourl:v1")  # without urls, the registry's copy
    assert ("GET", f"/v2/nourl/blobs/{image.layers[0].digest}") in [
        (method, path) for method, path, _ in fake.log]


# --- upload retry ----------------------------------------------------------------------

class BreakingRegistry(FakeRegistry):
    """Drops the connection during the first ``breaks`` blob PUTs of ``digest``, after
    reading the body (the config goes up meanwhile, unharmed)."""

    def __init__(self, breaks: int, digest: str):
        super().__init__()
        self.breaks = breaks
        self.digest = digest

    def __call__(self, request: httpx.Request) -> httpx.Response:
        if request.method == "PUT" and "/blobs/uploads/" in request.url.path and self.breaks \
                and request.url.params.get("digest") == self.digest:
            request.read()
            self.breaks -= 1
            self.log.append(("PUT", request.url.path, -1))
            raise httpx.WriteError("connection reset by peer")
        return super().__call__(request)


class CountingInput(MemoryInput):
    def __init__(self, image: Image, blobs: dict[str, bytes]):
        super().__init__(image, blobs)
        self.opened = 0

    def open_layer(self, layer: Layer):  # type: ignore[override]
        self.opened += 1
        return super().open_layer(layer)


def test_a_broken_streamed_put_is_retried_with_a_new_session() -> None:
    image, blobs = memory_image([random.Random(2).randbytes(2 * MiB)], compress=True)
    fake = BreakingRegistry(breaks=1, digest=image.layers[0].digest or "")
    source = CountingInput(image, blobs)
    with context(fake, retries=2) as ctx:
        _, result = run(ctx, source, build_output(ctx, f"registry://{HOST}/app:v1"))
    digest = image.layers[0].digest or ""
    assert fake.blobs[digest] == blobs[digest]
    assert source.opened == 2  # the source blob was read again for the second upload
    starts = [e for e in fake.log if e[0] == "POST" and e[1].endswith("/blobs/uploads/")]
    assert len(starts) == 3  # the layer twice, then the config
    assert any(method == "DELETE" for method, _, _ in fake.log)  # the broken session let go
    assert (ctx.stats["retries"], ctx.stats["layers"]) == (1, 1)
    assert ctx.stats["bytes"] == len(blobs[digest])  # the resent bytes are not counted twice
    assert result.manifest_digest == image.manifest_digest


def test_upload_retries_run_out() -> None:
    image, blobs = memory_image([b"z" * 5000], compress=True)
    fake = BreakingRegistry(breaks=10, digest=image.layers[0].digest or "")
    with context(fake, retries=2) as ctx, pytest.raises(TransportError, match="reg.example"):
        run(ctx, MemoryInput(image, blobs), build_output(ctx, f"registry://{HOST}/app:v1"))
    assert ctx.stats["retries"] == 2
    assert fake.breaks == 10 - 3  # the first attempt and two retries
    assert ("app", "v1") not in fake.manifests


class ResumingRegistry(FakeRegistry):
    """Answers a session's status (GET) as the distribution spec says, and holds one
    session a killed run left with ``held`` bytes (a cut PATCH's included)."""

    def __init__(self, held: bytes):
        super().__init__()
        self.uploads["left"] = bytearray(held)

    def _upload(self, request: httpx.Request, repo: str, uid: str, body: bytes) -> httpx.Response:
        if request.method == "GET" and uid in self.uploads:
            return httpx.Response(204, headers={
                "Location": f"/v2/{repo}/blobs/uploads/{uid}?_state=y",
                "Range": f"0-{len(self.uploads[uid]) - 1}", "Docker-Upload-UUID": uid})
        return super()._upload(request, repo, uid, body)


def _left_by_a_killed_run(state, digest: str, offset: int) -> None:
    (state / "reg.example-1-dead.jsonl").write_text(json.dumps({
        "open": f"https://{HOST}/v2/app/blobs/uploads/left?_state=x", "repo": "app",
        "digest": digest, "offset": offset, "t": time.time()}) + "\n")


@pytest.mark.parametrize("held", [5 * MiB + 123, 0], ids=["own-bytes", "wrong-bytes"])
def test_a_session_left_by_a_killed_run_resumes_at_the_registry_offset(
        held, tmp_path, monkeypatch) -> None:
    """The registry's offset counts, not the journal's (it may hold part of a cut
    chunk); a session holding other bytes than the blob's is refused by the final
    PUT's digest check, and the blob goes up afresh."""
    monkeypatch.setenv("OCCYSTRAP_UPLOAD_STATE_DIR", str(tmp_path))
    image, blobs = memory_image([random.Random(5).randbytes(36 * MiB)], compress=True)
    digest = image.layers[0].digest or ""
    blob = blobs[digest]
    fake = ResumingRegistry(blob[:held] if held else b"\0" * (3 * MiB))
    _left_by_a_killed_run(tmp_path, digest, 4 * MiB)
    source = CountingInput(image, blobs)
    with context(fake) as ctx:
        _, result = run(ctx, source, build_output(ctx, f"registry://{HOST}/app:v1"))
    assert fake.blobs[digest] == blob and result.manifest_digest == image.manifest_digest
    patched = sum(fake.chunks)
    if held:
        assert patched == len(blob) - held and source.opened == 1
    else:  # refused at the end, then sent whole
        assert patched == 2 * len(blob) - 3 * MiB and source.opened == 2
    assert list(tmp_path.iterdir()) == []  # nothing left to resume


class FaultyRegistry(FakeRegistry):
    """Answers the first requests matching ``(METHOD, path fragment)`` with ``fault``:
    an HTTP status, or "lost" (the request is served, then the answer never comes)."""

    def __init__(self, method: str, fragment: str, fault: int | str, times: int = 1):
        super().__init__()
        self.rule = (method, fragment, fault)
        self.times = times

    def __call__(self, request: httpx.Request) -> httpx.Response:
        method, fragment, fault = self.rule
        if self.times and request.method == method and fragment in request.url.path:
            self.times -= 1
            if fault == "lost":
                super().__call__(request)
                raise httpx.RemoteProtocolError("Server disconnected without sending a response")
            request.read()
            self.log.append((request.method, request.url.path, -int(fault)))
            return httpx.Response(int(fault), json={"errors": [{"code": "UNAVAILABLE"}]})
        return super().__call__(request)


def test_a_503_on_a_streamed_put_is_retried() -> None:
    fake = FaultyRegistry("PUT", "/blobs/uploads/", 503)
    image, blobs = memory_image([random.Random(3).randbytes(MiB)], compress=True)
    with context(fake, retries=1) as ctx:
        _, result = run(ctx, CountingInput(image, blobs), build_output(ctx, f"registry://{HOST}/a:1"))
    assert fake.blobs[image.layers[0].digest or ""] == blobs[image.layers[0].digest or ""]
    assert ctx.stats["retries"] == 1 and result.manifest_digest == image.manifest_digest


def test_a_lost_put_answer_is_settled_by_asking_not_by_replaying() -> None:
    """The registry stored the blob and the answer was lost: replaying the spent session
    would get BLOB_UPLOAD_UNKNOWN; a HEAD finds the blob there instead."""
    fake = FaultyRegistry("PUT", "/blobs/uploads/", "lost")
    image, blobs = memory_image([random.Random(4).randbytes(MiB)], compress=True)
    source = CountingInput(image, blobs)
    with context(fake, retries=1) as ctx:
        _, result = run(ctx, source, build_output(ctx, f"registry://{HOST}/a:1"))
    assert source.opened == 1 and ctx.stats["retries"] == 0
    puts = [e for e in fake.log if e[0] == "PUT" and "/uploads/" in e[1]]
    assert len(puts) == 2  # the layer once, then the config
    assert result.manifest_digest == image.manifest_digest


class LyingRegistry(FakeRegistry):
    """Says it stored another manifest than the one pushed."""

    def _manifest(self, request: httpx.Request, repo: str, ref: str, body: bytes) -> httpx.Response:
        answer = super()._manifest(request, repo, ref, body)
        if request.method == "PUT":
            answer.headers["Docker-Content-Digest"] = sha(b"something else")
        return answer


def test_a_wrong_digest_in_the_manifest_put_answer_is_an_error() -> None:
    image, blobs = memory_image([b"q" * 1000], compress=True)
    with pytest.raises(CorruptImageError, match="says it stored sha256:"):
        push(LyingRegistry(), image, blobs, f"registry://{HOST}/a:1")


def test_a_web_page_is_never_taken_for_a_registry_answer() -> None:
    """A captive portal answering 200 text/html to everything: no blob counts as
    present and no push as accepted, --no-verify or not."""
    def portal(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, html="<html><body>Welcome</body></html>")

    image, blobs = memory_image([b"w" * 1000], compress=True)
    with context(portal, verify=False) as ctx, pytest.raises(TransportError, match="HTML page"):
        run(ctx, MemoryInput(image, blobs), build_output(ctx, f"registry://{HOST}/a:1"))


# --- several platforms -----------------------------------------------------------------

def seed_index(fake: FakeRegistry, repo: str = "multi") -> tuple[bytes, dict[str, bytes]]:
    """An OCI index of amd64, arm64/v8 and the attestation of arm64, under ``repo:v1``."""
    children = {}
    for arch in ("amd64", "arm64"):
        manifest, _, _ = seed(fake, arch)
        fake.add_manifest(repo, sha(manifest), manifest, mt.OCI_MANIFEST)
        children[arch] = manifest
    attestation, _, _ = seed(fake, "unknown")
    fake.add_manifest(repo, sha(attestation), attestation, mt.OCI_MANIFEST)
    children["attestation"] = attestation
    doc = json.loads(index_of([(children["amd64"], {"os": "linux", "architecture": "amd64"}),
                               (children["arm64"], {"os": "linux", "architecture": "arm64",
                                                    "variant": "v8"}),
                               (attestation, {"os": "unknown", "architecture": "unknown"})]))
    doc["manifests"][2]["annotations"] = {"vnd.docker.reference.digest": sha(children["arm64"]),
                                          "vnd.docker.reference.type": "attestation-manifest"}
    index = json.dumps(doc, indent=1).encode()  # not compact: a rewrite would show
    fake.add_manifest(repo, "v1", index, mt.OCI_INDEX)
    return index, children


def test_all_platforms_copies_the_index_byte_for_byte() -> None:
    fake = FakeRegistry()
    index, children = seed_index(fake)
    with context(fake) as ctx, build_input(ctx, f"registry://{HOST}/multi:v1") as source:
        assert not source.selection.many  # only with all_platforms / platforms
    with context(fake) as ctx, build_input(
            ctx, f"registry://{HOST}/multi:v1?all_platforms=true") as source:
        image, result = run(ctx, source, build_output(ctx, f"registry://{HOST}/all:v1"))
    assert fake.manifests[("all", "v1")][0] == index
    assert result.manifest_digest == sha(index)
    for manifest in children.values():
        assert fake.manifests[("all", sha(manifest))][0] == manifest
    # the source is on this registry: each blob is mounted from it with one request,
    # without asking first whether the copy holds it (the fake answers yes to both)
    assert ctx.stats["mounted"] == 3 and ctx.stats["skipped"] == 0

    fake.log.clear()
    with context(fake, all_platforms=True) as ctx, \
            build_input(ctx, f"registry://{HOST}/multi:v1") as source:
        run(ctx, source, build_output(ctx, f"registry://{HOST}/all:v1"))
    # warm: the index's digest matched, nothing else was asked
    assert [(m, p) for m, p, _ in fake.log] == [("GET", "/v2/multi/manifests/v1"),
                                                 ("HEAD", "/v2/all/manifests/v1")]


def test_a_platform_list_rewrites_the_index() -> None:
    fake = FakeRegistry()
    index, children = seed_index(fake)
    uri = f"registry://{HOST}/multi:v1?platforms=linux/arm64"
    with context(fake) as ctx, build_input(ctx, uri) as source:
        _, result = run(ctx, source, build_output(ctx, f"registry://{HOST}/arm:v1"))
    pushed, media_type = fake.manifests[("arm", "v1")]
    assert media_type == mt.OCI_INDEX and result.manifest_digest == sha(pushed) != sha(index)
    entries = json.loads(pushed)["manifests"]
    # arm64 and the attestation that describes it, descriptors unchanged
    assert entries == [e for e in json.loads(index)["manifests"]
                       if e["digest"] in (sha(children["arm64"]), sha(children["attestation"]))]
    assert ("arm", sha(children["amd64"])) not in fake.manifests

    with pytest.raises(ImageNotFoundError, match=r"linux/s390x \(available: linux/amd64, "
                                                 r"linux/arm64/v8\)"):
        with context(fake) as ctx, build_input(
                ctx, f"registry://{HOST}/multi:v1?platforms=linux/amd64,linux/s390x") as source:
            run(ctx, source, build_output(ctx, f"registry://{HOST}/none:v1"))


def test_rewritten_images_rewrite_the_index(tmp_path: Any) -> None:
    """zstd images get new digests: the index lists them, in the same order."""
    fake = FakeRegistry()
    seed_index(fake)
    uri = f"registry://{HOST}/multi:v1?platforms=linux/amd64,linux/arm64"
    with context(fake) as ctx, build_input(ctx, uri) as source:
        run(ctx, source, build_output(ctx, f"registry://{HOST}/z:v1?compression=zstd"))
    entries = json.loads(fake.manifests[("z", "v1")][0])["manifests"]
    assert [e["platform"]["architecture"] for e in entries[:2]] == ["amd64", "arm64"]
    for entry in entries[:2]:
        data, media_type = fake.manifests[("z", entry["digest"])]
        assert entry["size"] == len(data) and entry["mediaType"] == media_type
        assert json.loads(data)["layers"][0]["mediaType"] == mt.OCI_LAYER_ZSTD


def test_index_to_oci_layout_and_tar(tmp_path: Any) -> None:
    fake = FakeRegistry()
    index, children = seed_index(fake)
    uri = f"registry://{HOST}/multi:v1?all_platforms=true"
    layout = tmp_path / "layout"
    with context(fake) as ctx, build_input(ctx, uri) as source:
        _, result = run(ctx, source, build_output(ctx, f"oci-layout://{layout}"))
    top = json.loads((layout / "index.json").read_text())["manifests"]
    assert [(e["digest"], e["mediaType"]) for e in top] == [(sha(index), mt.OCI_INDEX)]
    assert top[0]["annotations"]["org.opencontainers.image.ref.name"] == "v1"
    for data in [index, *children.values()]:
        assert (layout / "blobs" / "sha256" / sha(data).split(":")[1]).read_bytes() == data

    with context(fake) as ctx, build_input(ctx, uri) as source, \
            pytest.raises(UnsupportedError, match="cannot hold a multi-platform index"):
        run(ctx, source, build_output(ctx, f"tar://{tmp_path / 'out.tar'}"))
    assert not (tmp_path / "out.tar").exists()


# --- the config, pushed while the layers go up ----------------------------------------

class GatedRegistry(FakeRegistry):
    """Holds each layer PUT until the config's PUT has arrived (or 10 s went by)."""

    def __init__(self, config_digest: str):
        super().__init__()
        self.config_digest = config_digest
        self.config_arrived = threading.Event()
        self.layer_waited_for_config: list[bool] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        if request.method == "PUT" and "/blobs/uploads/" in request.url.path:
            if request.url.params.get("digest") == self.config_digest:
                self.config_arrived.set()
            else:
                self.layer_waited_for_config.append(self.config_arrived.wait(10))
        return super().__call__(request)


def test_the_config_goes_up_while_the_layers_do() -> None:
    image, blobs = memory_image([b"a" * 3000, b"b" * 3000], compress=True)
    fake = GatedRegistry(image.config_digest)
    with context(fake) as ctx:
        _, result = run(ctx, MemoryInput(image, blobs), build_output(
            ctx, f"registry://{HOST}/app:v1"))
    assert fake.layer_waited_for_config == [True, True]  # the config did not wait for them
    assert fake.blobs[image.config_digest] == image.config
    assert result.manifest_digest == image.manifest_digest


def test_a_filter_changing_the_config_sends_only_the_new_config() -> None:
    tar = io.BytesIO()
    with tarfile.open(fileobj=tar, mode="w") as archive:
        info = tarfile.TarInfo("file")
        info.size, info.mtime = 4, 12345
        archive.addfile(info, io.BytesIO(b"data"))
    image, blobs = memory_image([tar.getvalue()], compress=True)
    fake = FakeRegistry()
    with context(fake) as ctx:
        output = build_output(ctx, f"registry://{HOST}/app:v1", ["normalize-timestamps"])
        _, result = run(ctx, MemoryInput(image, blobs), output)
    assert image.config_digest not in fake.blobs  # the source's config never went up
    pushed = json.loads(fake.manifests[("app", "v1")][0])
    assert pushed["config"]["digest"] in fake.blobs
    assert result.manifest_digest != image.manifest_digest
