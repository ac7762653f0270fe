"""Bearer tokens that run out in the middle of a push, against the real token registry:
the run fetches fresh ones and goes on, sending each blob once."""

from __future__ import annotations

import os
import uuid
from collections import Counter

import httpx

from occystrap_core import hookimpl, library
from occystrap_core.testing.http import FakeClock
from occystrap_core.testing.registry import push_sample_image
from occystrap_core.transport.clock import CLOCK_KEY
from occystrap_core.types import TransportLayer


class Ager:
    """A transport layer that ages the run's clock past any token's life after each
    finished blob upload, and counts the requests by (method, path)."""

    def __init__(self, clock: FakeClock, by: float):
        self.clock, self.by = clock, by
        self.sent: Counter[tuple[str, str]] = Counter()

    def _wrap(self, inner, host, ctx):
        ager = self

        class Aging(httpx.BaseTransport):
            def handle_request(self, request):
                response = inner.handle_request(request)
                ager.sent[request.method, request.url.path] += 1
                if request.method == "PUT" and "/blobs/uploads/" in request.url.path:
                    ager.clock.advance(ager.by)
                return response

            def close(self):
                inner.close()

        return Aging()

    @hookimpl
    def occystrap_transport_layers(self):
        return [TransportLayer(name="test-ager", order=60, wrap=self._wrap)]


def test_tokens_that_run_out_between_layers_are_renewed(registry_token, register_plugin,
                                                        tmp_path):
    server, tokens = registry_token, registry_token.token_server
    repo = f"expiry/{uuid.uuid4().hex[:8]}"
    layers = [{f"layer-{i}.bin": os.urandom(2048)} for i in range(4)]
    push_sample_image(server, repo, "v1", layers=layers)
    archive = tmp_path / "image.tar"
    creds = {"username": server.username, "password": server.password,
             "ca_cert": server.ca_cert}
    library.copy(f"registry://{server.host}/{repo}:v1", f"tar://{archive}", **creds)

    clock = FakeClock()
    ager = Ager(clock, by=tokens.expires_in * 2)
    register_plugin(ager, name="occystrap-test-ager")
    tokens.reset()
    dest = f"{server.host}/{repo}-copy:v1"
    with library.session(parallel=1, **creds) as session:
        session.shared(CLOCK_KEY, lambda: clock)
        library.copy(f"tar://{archive}", f"registry://{dest}", session=session)
    puts = {path: n for (method, path), n in ager.sent.items()
            if method == "PUT" and "/blobs/uploads/" in path}
    # every blob uploaded (or mounted from the source repository) once, no session twice
    assert len(puts) + ager.sent["POST", f"/v2/{repo}-copy/blobs/uploads/"] >= len(layers) + 1
    assert set(puts.values()) == {1}
    assert ager.sent["PUT", f"/v2/{repo}-copy/manifests/v1"] == 1
    # fresh tokens after each upload (each ran out), not one per request
    assert len(puts) < tokens.count < sum(ager.sent.values()) - ager.sent["GET", "/token"]
    assert all(r.status == 200 for r in tokens.requests)
    library.copy(f"registry://{dest}", f"tar://{tmp_path / 'back.tar'}", **creds)
