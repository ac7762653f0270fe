"""A cross-repository mount the token server does not grant: the destination's
credentials may push there but not pull from the source repository (another user's
credentials read it). The copy uploads instead, against the real token registry."""

from __future__ import annotations

import json

from occystrap_core.testing.registry import User, push_sample_image, start_registry

USERS = (User("alice", "alice-secret", ("pull", "push", "delete", "*")),
         User("reader", "reader-secret", ("pull",)),
         User("pusher", "pusher-secret", ("pull", "push"), repositories=("dest/*",)))


def test_a_mount_without_pull_on_the_source_falls_back_to_upload(tmp_path, run_cli, skopeo):
    server = start_registry("token", tmp_path / "registry", users=USERS, access_log=True)
    try:
        push_sample_image(server, "src/app", "v1")
        result = run_cli("--ca-cert", server.ca_cert, "--src-username", "reader",
                         "--src-password", "reader-secret", "--dest-username", "pusher",
                         "--dest-password", "pusher-secret", "process",
                         f"registry://{server.host}/src/app:v1",
                         f"registry://{server.host}/dest/app:v1")
        assert result.exit_code == 0, result.output
        granted = [r for r in server.token_server.requests if r.username == "pusher"]
        assert any("repository:src/app:pull" in r.scopes for r in granted)  # it did ask
        served = server.requests()
        assert [r for r in served if r.startswith("POST /v2/dest/app/blobs/uploads/?")
                and "mount=" in r]  # it tried a mount, then uploaded
        assert [r for r in served if r.startswith("PUT /v2/dest/app/blobs/uploads/")]
        out = skopeo("inspect", f"--cert-dir={server.cert_dir}", "--creds",
                     "pusher:pusher-secret", f"docker://{server.host}/dest/app:v1")
        assert json.loads(out)["Name"] == f"{server.host}/dest/app"
    finally:
        server.stop()
