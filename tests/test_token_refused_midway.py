"""A registry refusing a token in the middle of a push (revoked, or expired by its
clock): the blob request it refused, body and all, goes again with a fresh token."""

from __future__ import annotations

import uuid
from pathlib import Path

from occystrap_core.testing import images
from occystrap_core.testing.faults import Fault


def test_a_token_refused_on_a_blob_upload_is_renewed_and_the_blob_sent_again(
        fault_front_factory, registry_token, run_cli, tmp_path):
    server = registry_token
    assert server.token_server is not None
    front = fault_front_factory(server, tls=True)
    repo = f"refused/{uuid.uuid4().hex[:8]}"
    tokens = server.token_server
    challenge = (f'Bearer realm="{tokens.realm}",service="{tokens.service}",'
                 f'scope="repository:{repo}:pull,push",error="invalid_token"')
    front.add(Fault("status", method="PUT", path="/blobs/uploads/", status=401,
                    code="UNAUTHORIZED", challenge=challenge))
    layout = tmp_path / "layout"
    images.write_oci_layout(str(layout), [images.sample_image(seed=11)], ["v1"])
    tokens.reset()
    ca = tmp_path / "both.pem"  # the front's CA, and the token realm's
    ca.write_text(Path(str(front.ca_cert)).read_text() + Path(str(server.ca_cert)).read_text())
    result = run_cli("--ca-cert", str(ca), "--username", "alice", "--password",
                     "alice-secret", "--no-progress", "-j", "1", "process",
                     f"oci-layout://{layout}", f"registry://{front.host}/{repo}:v1")
    assert result.exit_code == 0, result.output
    assert front.injected() == 1
    puts = [h for h in front.log if h.method == "PUT" and "/blobs/uploads/" in h.path]
    assert [h.status for h in puts].count(401) == 1
    assert [h.status for h in puts].count(201) == 3  # layers and config, the refused afresh
    assert tokens.count >= 2  # a new token after the refusal
    assert "1 retries" in result.stderr and "Traceback" not in result.output
