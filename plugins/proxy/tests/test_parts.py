"""The proxy's parts on their own: the blob store's lifetime rules, names, options."""

from __future__ import annotations

import base64
import hashlib
import os
from pathlib import Path

import bcrypt
import pytest

from occystrap_core.errors import UsageError
from occystrap_core.serving import Pushed, RegistryError
from occystrap_core.types import Credentials
from occystrap_proxy.auth import Authenticator
from occystrap_proxy.command import parse_listen
from occystrap_proxy.ranges import Unsatisfiable, byte_range
from occystrap_proxy.service import Remote
from occystrap_proxy.store import BlobStore


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def _put(store: BlobStore, data: bytes, repository: str = "app") -> str:
    uuid = store.new_upload(repository)
    upload = store.upload(uuid)
    with open(upload.path, "ab") as f:
        upload.write(f, data)
    digest = "sha256:" + hashlib.sha256(data).hexdigest()
    store.complete(uuid, digest)
    return digest


def test_blobs_go_after_their_last_use_unless_pinned(tmp_path: Path) -> None:
    clock = Clock()
    store = BlobStore(str(tmp_path), keep=60, clock=clock)
    kept, dropped = _put(store, b"kept"), _put(store, b"dropped")
    abandoned = store.new_upload("app")
    with store.pinned([kept, "sha256:" + "0" * 64]):
        clock.now += 61
        assert store.sweep() == 2  # the unpinned blob and the idle upload
        assert store.size(kept) == 4 and store.size(dropped) is None
        assert not os.path.exists(store.path(dropped))
    with pytest.raises(RegistryError):
        store.upload(abandoned)
    clock.now += 30
    assert store.sweep() == 0  # pinned until just now: used then
    clock.now += 31
    assert store.sweep() == 1 and store.size(kept) is None
    assert os.listdir(tmp_path / "blobs") == [] and os.listdir(tmp_path / "uploads") == []


def test_an_upload_that_does_not_hash_to_its_digest_is_dropped(tmp_path: Path) -> None:
    store = BlobStore(str(tmp_path), keep=60)
    uuid = store.new_upload("app")
    with pytest.raises(RegistryError) as caught:
        store.complete(uuid, "sha256:" + "1" * 64)
    assert caught.value.code == "DIGEST_INVALID"
    assert os.listdir(tmp_path / "uploads") == [] and os.listdir(tmp_path / "blobs") == []
    with pytest.raises(RegistryError):  # the upload ended
        store.complete(uuid, "sha256:" + "1" * 64)


def test_pushed_manifests_are_bounded(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from occystrap_proxy import store as store_module

    monkeypatch.setattr(store_module, "MAX_MANIFESTS", 3)
    store = BlobStore(str(tmp_path), keep=60)
    for i in range(5):
        store.remember("app", [f"sha256:{i:064x}"], Pushed(b"{}", "x/y", f"sha256:{i:064x}"))
    assert store.manifest("app", f"sha256:{0:064x}") is None
    assert store.manifest("app", f"sha256:{4:064x}") is not None


@pytest.mark.parametrize("text, host, prefix, user", [
    ("ghcr.io/myorg", "ghcr.io", "myorg", None),
    ("ghcr.io/myorg/team/", "ghcr.io", "myorg/team", None),
    ("127.0.0.1:5000", "127.0.0.1:5000", "", None),
    ("u:p@ss@[::1]:5000/x", "[::1]:5000", "x", "u"),
])
def test_remote_names_reads_and_writes_alike(text: str, host: str, prefix: str,
                                             user: str | None) -> None:
    remote = Remote.parse(text, "--upstream")
    assert (remote.host, remote.prefix) == (host, prefix)
    assert (remote.credentials.username if remote.credentials else None) == user
    path = f"{prefix}/app" if prefix else "app"
    plain = Remote(host, prefix)
    assert plain.uri("app", "v1") == f"registry://{host}/{path}:v1"
    digest = "sha256:" + "a" * 64
    assert plain.uri("app", digest) == f"registry://{host}/{path}@{digest}"
    with_creds = Remote(host, prefix, Credentials("bob", "p@ss/word"))
    assert with_creds.uri("app").endswith("?username=bob&password=p%40ss%2Fword")


@pytest.mark.parametrize("text, expected", [
    ("127.0.0.1:5050", ("127.0.0.1", 5050)), ("5051", ("127.0.0.1", 5051)),
    ("[::1]:80", ("::1", 80)), (":0", ("127.0.0.1", 0)), ("0.0.0.0:443", ("0.0.0.0", 443)),
])
def test_listen_addresses(text: str, expected: tuple[str, int]) -> None:
    assert parse_listen(text) == expected


@pytest.mark.parametrize("text", ["host:99999", "host:", "[::1]", "host:port",
                                  "host:\u00b2", "host:" + "9" * 5000, "host:065536"])
def test_bad_listen_addresses(text: str) -> None:
    with pytest.raises(UsageError):
        parse_listen(text)


def test_htpasswd_checks_and_remembers(tmp_path: Path) -> None:
    path = tmp_path / "htpasswd"
    hashed = bcrypt.hashpw(b"s3cret", bcrypt.gensalt(rounds=4)).decode().replace("$2b$", "$2y$")
    path.write_text(f"# users\nalice:{hashed}\n")
    auth = Authenticator(str(path))

    def header(user: str, password: str) -> str:
        return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()

    assert auth.check(header("alice", "s3cret"))
    assert auth.check(header("alice", "s3cret"))  # remembered
    assert not auth.check(header("alice", "wrong"))
    assert not auth.check(header("mallory", "s3cret"))
    assert not auth.check("Bearer abc") and not auth.check(None) and not auth.check("Basic !!")
    path.write_text("alice:plaintext\n")
    with pytest.raises(UsageError, match="line 1: expected USER:BCRYPT-HASH"):
        Authenticator(str(path))
    path.write_text(f"alice:{hashed}\nbob:$2y$05$truncated\n")  # bcrypt: "Invalid salt"
    with pytest.raises(UsageError, match="line 2: expected USER:BCRYPT-HASH"):
        Authenticator(str(path))
    path.write_bytes(b"# users\n\xffbob:" + hashed.encode() + b"\n")
    with pytest.raises(UsageError, match="line 2: not UTF-8 text"):
        Authenticator(str(path))


def test_an_upload_is_not_swept_while_a_request_writes_it(tmp_path: Path) -> None:
    """A layer that takes longer than keep to arrive (one long PATCH) stays, and
    counts as used when its request ends."""
    clock = Clock()
    store = BlobStore(str(tmp_path), keep=60, clock=clock)
    uuid = store.new_upload("app")
    with store.writing(uuid) as upload:
        with open(upload.path, "ab") as f:
            upload.write(f, b"slow")
        clock.now += 600
        assert store.sweep() == 0
        with pytest.raises(RegistryError) as caught, store.writing(uuid):
            pass  # one request at a time
        assert caught.value.status == 416
    clock.now += 59
    assert store.sweep() == 0
    assert store.complete(uuid, "sha256:" + hashlib.sha256(b"slow").hexdigest()) == 4


def test_a_blob_pushed_again_keeps_the_pins_of_the_first(tmp_path: Path) -> None:
    """Two clients push one layer at once: the image that pinned the first copy keeps
    it, however long its copy takes."""
    clock = Clock()
    store = BlobStore(str(tmp_path), keep=60, clock=clock)
    digest = _put(store, b"shared layer")
    with store.pinned([digest]):
        assert _put(store, b"shared layer") == digest
        clock.now += 600
        assert store.sweep() == 0
        assert os.path.exists(store.path(digest))
    clock.now += 61
    assert store.sweep() == 1 and not os.path.exists(store.path(digest))


def test_a_push_keeps_its_blobs_until_its_manifest_while_its_uploads_go_on(
        tmp_path: Path) -> None:
    """A push on a slow link: its config went up, a base layer was skipped (the
    store had it), and one layer streams for longer than keep. Those blobs stay
    until the manifest is handled, then go keep seconds after their last use;
    another repository's blobs and an abandoned push's do not linger."""
    clock = Clock()
    store = BlobStore(str(tmp_path), keep=60, clock=clock)
    base, config = _put(store, b"base"), _put(store, b"config")
    other = _put(store, b"other", "elsewhere")
    store.settle("app", [base])  # an earlier push's, done
    assert store.size(base, "app") == 4  # a HEAD: this push skips it
    slow = store.new_upload("app")
    with store.writing(slow) as upload:
        with open(upload.path, "ab") as f:
            upload.write(f, b"layer")
        clock.now += 600
        assert store.sweep() == 1 and store.size(other) is None  # "other" waited for no push
    clock.now += 59
    store.complete(slow, "sha256:" + hashlib.sha256(b"layer").hexdigest())
    clock.now += 59  # the manifest comes late, but within keep of the last upload
    assert store.sweep() == 0 and store.size(config) == 6 and store.size(base) == 4
    store.settle("app", [base, config])
    clock.now += 61
    assert store.sweep() == 3  # base, config and the layer (whose manifest never came)


def test_blob_requests_do_not_queue_behind_manifests_waiting_for_copies(
        tmp_path: Path) -> None:
    """Manifest PUTs wait for their copy (at most --concurrency at once): on threads
    of their own, so that another client's blob HEAD is answered meanwhile, however
    many pushes wait."""
    import asyncio
    import io
    import json
    import threading
    from concurrent.futures import ThreadPoolExecutor

    from occystrap_proxy.app import ProxyApp
    from occystrap_proxy.events import EventLog

    copying = threading.Event()
    done = threading.Event()

    class Service:  # the copy of a push takes long; blob sizes are known at once
        store = BlobStore(str(tmp_path), keep=60)

        def push(self, name: str, ref: str, data: bytes, media_type: str) -> Pushed:
            copying.set()
            assert done.wait(30)
            return Pushed(data, media_type, "sha256:" + "0" * 64)

        def blob_size(self, name: str, digest: str, pushing: bool = False) -> int:
            return 4

    async def call(method: str, path: str, body: bytes = b"") -> int:
        sent: list[dict[str, object]] = []
        messages = [{"type": "http.request", "body": body, "more_body": False}]

        async def receive() -> dict[str, object]:
            return messages.pop(0) if messages else await asyncio.Future()

        async def send(message: dict[str, object]) -> None:
            sent.append(message)

        scope = {"type": "http", "method": method, "path": path, "query_string": b"",
                 "headers": [(b"content-type", b"application/vnd.oci.image.manifest.v1+json")],
                 "client": ("127.0.0.1", 1)}
        await app(scope, receive, send)
        return int(sent[0]["status"])  # type: ignore[call-overload]

    async def scenario() -> None:
        loop = asyncio.get_running_loop()
        push = asyncio.create_task(call("PUT", "/v2/app/manifests/v1",
                                        json.dumps({"schemaVersion": 2}).encode()))
        await loop.run_in_executor(None, copying.wait, 30)
        head = await asyncio.wait_for(call("HEAD", "/v2/app/blobs/sha256:" + "1" * 64), 30)
        done.set()
        assert head == 200 and await push == 201

    with ThreadPoolExecutor(1) as pool, ThreadPoolExecutor(1) as images:
        app = ProxyApp(Service(), EventLog(io.StringIO()), pool,  # type: ignore[arg-type]
                       images=images)
        try:
            asyncio.run(scenario())
        finally:
            done.set()


@pytest.mark.parametrize("header, wanted", [
    ("", None), ("bytes=5-", (5, 9)), ("bytes=2-4", (2, 4)), ("bytes=-3", (7, 9)),
    ("bytes=-30", (0, 9)), ("bytes=8-100", (8, 9)), ("bytes=4-2", None),
    ("bytes=0-1,4-5", None), ("items=0-1", None), ("bytes=-", None),
    pytest.param("bytes=2-" + "9" * 5000, (2, 9), id="huge-last"),
    pytest.param("bytes=-" + "9" * 5000, (0, 9), id="huge-suffix"),
    ("bytes=0009-", (9, 9)), ("bytes=--5", None), ("bytes=-5-", None), ("bytes=50-20", None),
    pytest.param("bytes=" + "9" * 5000 + "-" + "9" * 4999, None, id="huge-reversed")])
def test_the_byte_range_a_blob_get_asks_for(header: str, wanted: tuple[int, int] | None) -> None:
    assert byte_range(header, 10) == wanted


@pytest.mark.parametrize("header, size", [("bytes=10-", 10), ("bytes=-0", 10), ("bytes=0-", 0),
                                          pytest.param("bytes=" + "9" * 5000 + "-", 10,
                                                       id="huge-first"),
                                          pytest.param("bytes=-" + "0" * 5000, 10,
                                                       id="long-zero-suffix")])
def test_a_range_past_the_end_is_unsatisfiable(header: str, size: int) -> None:
    with pytest.raises(Unsatisfiable):
        byte_range(header, size)
