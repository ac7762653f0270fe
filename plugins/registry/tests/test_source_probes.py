"""What a registry source answers without fetching: a manifest's digest by HEAD, a
blob's size by HEAD (the proxy serves its downstream with these)."""

from __future__ import annotations

from typing import Any

import occystrap
from occystrap_core.api import ImageSource
from occystrap_core.testing.registry import RegistryServer, push_sample_image


def test_manifest_digest_and_blob_size_by_head(registry: RegistryServer,
                                               repo_name: Any) -> None:
    repo = repo_name("probe")
    pushed = push_sample_image(registry, repo, "v1")
    options: dict[str, Any] = {"insecure": True} if registry.scheme == "http" else \
        {"ca_cert": registry.ca_cert}
    if registry.username:
        options.update(username=registry.username, password=registry.password)
    with occystrap.session(**options) as session:
        with occystrap.open_source(f"registry://{registry.host}/{repo}:v1",
                                   session=session) as source:
            assert isinstance(source, ImageSource)
            assert source.manifest_digest() == pushed.manifest_digest
            assert source.blob_size(pushed.layer_digests[0]) > 0
            assert source.blob_size("sha256:" + "0" * 64) is None
        with occystrap.open_source(f"registry://{registry.host}/{repo}:absent",
                                   session=session) as source:
            assert isinstance(source, ImageSource)
            assert source.manifest_digest() is None
