"""Referrers: listed (fallback tag index on a registry without the API), shown by
``referrers`` and ``info``, and kept up to date when occystrap pushes a manifest that
has a subject, without dropping another tool's entries."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import re
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from occystrap_core import mediatypes as mt
from occystrap_core.oci import referrers
from occystrap_core.oci.manifest import Descriptor, parse
from occystrap_core.testing.faults import Fault, FaultFront
from occystrap_core.testing.registry import RegistryServer, push_sample_image


def sha(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def oras_artifact(server: RegistryServer, repo: str, tag: str, artifact_type: str,
                  content: bytes, subject: dict[str, Any] | None, workdir: Path,
                  annotations: dict[str, str] | None = None) -> dict[str, Any]:
    """An artifact with a subject, pushed by oras (the PyPI client), one upload call
    at a time (oras-py has no artifactType parameter). Returns its descriptor."""
    import oras.oci
    import oras.provider

    registry = oras.provider.Registry(hostname=server.host, insecure=True)
    cwd = os.getcwd()
    os.chdir(workdir)
    try:
        name = f"{tag}.bin"
        Path(name).write_bytes(content)
        container = registry.get_container(f"{server.host}/{repo}:{tag}")
        layer = oras.oci.NewLayer(name, media_type=artifact_type)
        registry.upload_blob(name, container, layer)
        Path("empty.json").write_text("{}")
        empty = {"mediaType": mt.OCI_EMPTY, "digest": sha(b"{}"), "size": 2, "data": "e30="}
        registry.upload_blob("empty.json", container, empty)
        manifest = {"schemaVersion": 2, "mediaType": mt.OCI_MANIFEST,
                    "artifactType": artifact_type, "config": empty, "layers": [layer],
                    **({"subject": subject} if subject else {}),
                    "annotations": annotations or {}}
        registry.upload_manifest(manifest, container).raise_for_status()
    finally:
        os.chdir(cwd)
    data = httpx.get(f"{server.url}/v2/{repo}/manifests/{tag}",
                     headers={"Accept": mt.OCI_MANIFEST}).content
    return {"mediaType": mt.OCI_MANIFEST, "digest": sha(data), "size": len(data)}


@pytest.fixture
def graph(registry_plain: RegistryServer, tmp_path: Path) -> Iterator[dict[str, Any]]:
    """In src/app: an image, an SBOM of it and a signature of the SBOM, by oras."""
    repo = f"src/app-{os.urandom(4).hex()}"
    image = push_sample_image(registry_plain, repo, "v1")
    subject = {"mediaType": mt.OCI_MANIFEST, "digest": image.manifest_digest,
               "size": len(image.manifest)}
    sbom = oras_artifact(registry_plain, repo, "sbom", "application/spdx+json",
                         b'{"spdxVersion": "SPDX-2.3"}', subject, tmp_path,
                         {"org.example.kind": "sbom"})
    signature = oras_artifact(registry_plain, repo, "sig",
                              "application/vnd.dev.sigstore.bundle.v0.3+json",
                              b'{"sig": 1}', sbom, tmp_path)
    yield {"repo": repo, "image": subject, "sbom": sbom, "signature": signature}


@pytest.fixture
def listed_graph(registry_plain: RegistryServer, graph: dict[str, Any]) -> dict[str, Any]:
    """The graph with the fallback tag indexes a spec-following client (the oras CLI)
    writes; oras-py writes none."""
    for subject, referrer in (("image", "sbom"), ("sbom", "signature")):
        data = _get(registry_plain, graph["repo"], graph[referrer]["digest"]).content
        doc = parse(data, mt.OCI_MANIFEST)
        tag = referrers.fallback_tag(graph[subject]["digest"])
        index = referrers.merged(None, referrers.descriptor_of(doc))
        response = httpx.put(f"{registry_plain.url}/v2/{graph['repo']}/manifests/{tag}",
                             content=index, headers={"Content-Type": mt.OCI_INDEX})
        assert response.status_code == 201
    return graph


def _get(server: RegistryServer, repo: str, ref: str) -> httpx.Response:
    return httpx.get(f"{server.url}/v2/{repo}/manifests/{ref}",
                     headers={"Accept": ", ".join(mt.MANIFESTS + mt.INDEXES)})


def test_copies_with_a_subject_keep_the_fallback_index(
        registry_plain: RegistryServer, graph: dict[str, Any],
        run_cli: Callable[..., Any]) -> None:
    """Registry 2.8 has no referrers API: occystrap adds what it pushes to the fallback
    tag index, keeps another tool's entry there, and lists the tree from it."""
    host, src, dst = registry_plain.host, graph["repo"], graph["repo"] + "-mirror"
    def process_ok(source: str, destination: str) -> None:
        result = run_cli("--insecure", "process", source, destination)
        assert result.exit_code == 0, result.output

    process_ok(f"registry://{host}/{src}:v1", f"registry://{host}/{dst}:v1")
    tag = referrers.fallback_tag(graph["image"]["digest"])
    assert _get(registry_plain, dst, tag).status_code == 404  # nothing refers to it yet
    # another tool's entry, already there: the image itself stands in for it
    other = {**graph["image"], "artifactType": "application/x-other-tool"}
    other_index = json.dumps({"schemaVersion": 2, "mediaType": mt.OCI_INDEX,
                              "manifests": [other]}).encode()
    assert httpx.put(f"{registry_plain.url}/v2/{dst}/manifests/{tag}", content=other_index,
                     headers={"Content-Type": mt.OCI_INDEX}).status_code == 201
    for kind in ("sbom", "signature"):
        process_ok(f"registry://{host}/{src}@{graph[kind]['digest']}",
                   f"registry://{host}/{dst}@{graph[kind]['digest']}")

    listed = json.loads(_get(registry_plain, dst, tag).content)["manifests"]
    assert listed[0] == other
    assert [(d["digest"], d["artifactType"]) for d in listed[1:]] == [
        (graph["sbom"]["digest"], "application/spdx+json")]
    assert listed[1]["annotations"] == {"org.example.kind": "sbom"}

    shown = run_cli("--insecure", "referrers", f"registry://{host}/{dst}:v1", "-O", "json")
    assert shown.exit_code == 0, shown.output
    found = json.loads(shown.stdout)
    assert found["subject"] == graph["image"]["digest"]
    sbom = next(n for n in found["referrers"] if n["digest"] == graph["sbom"]["digest"])
    assert sbom["size"] == graph["sbom"]["size"]
    assert [n["digest"] for n in sbom["referrers"]] == [graph["signature"]["digest"]]
    text = run_cli("--insecure", "referrers", f"registry://{host}/{dst}:v1").stdout
    assert "application/spdx+json" in text and "org.example.kind=sbom" in text
    only = run_cli("--insecure", "referrers", "--artifact-type", "application/spdx+json",
                   f"registry://{host}/{dst}:v1", "-O", "json")
    assert [n["digest"] for n in json.loads(only.stdout)["referrers"]] == [
        graph["sbom"]["digest"]]

    info = run_cli("--insecure", "info", f"registry://{host}/{dst}:v1", "-O", "json")
    assert graph["sbom"]["digest"] in [n["digest"] for n in json.loads(info.stdout)["referrers"]]
    assert "Referrers:" in run_cli("--insecure", "info", f"registry://{host}/{dst}:v1").stdout


def test_a_source_without_referrers_says_so(registry_plain: RegistryServer,
                                            run_cli: Callable[..., Any]) -> None:
    repo = f"src/lonely-{os.urandom(4).hex()}"
    push_sample_image(registry_plain, repo, "v1")
    shown = run_cli("--insecure", "referrers", f"registry://{registry_plain.host}/{repo}:v1",
                    "-O", "json")
    assert shown.exit_code == 0 and json.loads(shown.stdout)["referrers"] == []
    missing = run_cli("--insecure", "referrers",
                      f"registry://{registry_plain.host}/{repo}:nope")
    assert missing.exit_code == 1 and missing.stderr.startswith("Error: ")


def test_merging_keeps_what_others_wrote() -> None:
    other = {"mediaType": mt.OCI_MANIFEST, "digest": "sha256:" + "1" * 64, "size": 10,
             "artifactType": "x/y", "annotations": {"z": "1"}, "vendor.extra": True}
    existing = json.dumps({"schemaVersion": 2, "mediaType": mt.OCI_INDEX,
                           "manifests": [other]}).encode()
    ours = Descriptor(mt.OCI_MANIFEST, "sha256:" + "2" * 64, 20, artifact_type="a/b")
    once = referrers.merged(existing, ours)
    twice = referrers.merged(once, ours)
    assert json.loads(twice)["manifests"] == [other, ours.json()]
    assert referrers.listed(twice, "a/b") == [ours]
    assert json.loads(referrers.merged(b"not json", ours))["manifests"] == [ours.json()]
    assert referrers.fallback_tag("sha256:" + "a" * 64) == "sha256-" + "a" * 64


def test_a_tree_stops_at_cycles_and_depth() -> None:
    def node(n: int) -> Descriptor:
        return Descriptor(mt.OCI_MANIFEST, f"sha256:{n:064x}", n, artifact_type="t")

    chain = {node(i).digest: [node(i + 1)] for i in range(20)}
    chain[node(3).digest].append(node(0))  # a cycle back to the subject
    found = referrers.tree(lambda d: chain.get(d, []), node(0).digest)
    depth, level = 0, found
    while level:
        depth += 1
        assert all(n["digest"] != node(0).digest or not n["referrers"] for n in level)
        level = level[0]["referrers"]
    assert depth == referrers.MAX_DEPTH
    assert parse(json.dumps({"schemaVersion": 2, "mediaType": mt.OCI_INDEX,
                             "manifests": []}).encode())


def test_process_referrers_copies_the_graph(registry_plain: RegistryServer,
                                            listed_graph: dict[str, Any],
                                            run_cli: Callable[..., Any]) -> None:
    host, src = registry_plain.host, listed_graph["repo"]
    dst = src + "-withrefs"

    def tree(repo: str) -> Any:
        shown = run_cli("--insecure", "referrers", f"registry://{host}/{repo}:v1", "-O", "json")
        assert shown.exit_code == 0, shown.output
        return json.loads(shown.stdout)

    copied = run_cli("--insecure", "process", "--referrers", f"registry://{host}/{src}:v1",
                     f"registry://{host}/{dst}:v1")
    assert copied.exit_code == 0, copied.output
    assert "Copied 2 referrers" in copied.stderr
    assert tree(dst) == tree(src)
    # oras (PyPI) reads the same fallback index there: the descriptors, byte for byte
    import oras.provider

    witness = oras.provider.Registry(hostname=host, insecure=True)
    tag = referrers.fallback_tag(listed_graph["image"]["digest"])
    seen = [witness.get_manifest(f"{host}/{repo}:{tag}")["manifests"] for repo in (src, dst)]
    assert seen[0] == seen[1] and seen[1][0]["digest"] == listed_graph["sbom"]["digest"]
    assert tree(dst)["referrers"][0]["referrers"][0]["digest"] == \
        listed_graph["signature"]["digest"]
    again = run_cli("--insecure", "process", "--referrers", f"registry://{host}/{src}:v1",
                    f"registry://{host}/{dst}:v1")  # nothing new: everything already there
    assert again.exit_code == 0 and "Copied 2 referrers" in again.stderr
    assert tree(dst) == tree(src)

    only = src + "-sigs"
    typed = run_cli("--insecure", "process", "--referrers", "--referrer-type",
                    "application/vnd.dev.sigstore.bundle.v0.3+json",
                    f"registry://{host}/{src}:v1", f"registry://{host}/{only}:v1")
    assert "Copied 0 referrers" in typed.stderr  # the signature signs the SBOM, not the image
    assert tree(only)["referrers"] == []


def test_a_stale_fallback_entry_is_left_behind(registry_plain: RegistryServer,
                                              listed_graph: dict[str, Any],
                                              run_cli: Callable[..., Any]) -> None:
    """The fallback index is the clients' to keep: deleting a signature leaves its
    entry there. The copy must not then fail after writing the image: what is gone is
    left behind with a warning, the rest copied."""
    host, src = registry_plain.host, listed_graph["repo"]
    gone = listed_graph["signature"]["digest"]
    assert httpx.delete(f"{registry_plain.url}/v2/{src}/manifests/{gone}").status_code == 202
    copied = run_cli("--insecure", "process", "--referrers", f"registry://{host}/{src}:v1",
                     f"registry://{host}/{src}-stale:v1")
    assert copied.exit_code == 0, copied.output
    assert "Copied 1 referrers" in copied.stderr
    assert f"{gone} is listed as a referrer of {listed_graph['sbom']['digest']} but missing" \
        in copied.stderr
    shown = json.loads(run_cli("--insecure", "referrers", "-O", "json",
                               f"registry://{host}/{src}-stale:v1").stdout)
    assert [(n["digest"], n["referrers"]) for n in shown["referrers"]] == [
        (listed_graph["sbom"]["digest"], [])]


def test_a_destination_without_referrers_is_refused_first(
        registry_plain: RegistryServer, listed_graph: dict[str, Any],
        run_cli: Callable[..., Any], expect_error: Callable[..., None],
        tmp_path: Path) -> None:
    """A docker-save tar or a directory holds no manifest by digest: asked for the
    referrers, the copy says so before writing anything (it used to write the image,
    then fail naming a class, or warn that the copy had changed the image)."""
    source = f"registry://{registry_plain.host}/{listed_graph['repo']}:v1"
    out = tmp_path / "out"
    out.mkdir()
    for destination in (f"tar://{out / 'x.tar'}", f"dir://{out / 'd'}"):
        for stale in ((), ("--stale-referrers",)):
            expect_error(run_cli("--insecure", "process", "--referrers", *stale, source,
                                 destination),
                         "cannot hold referrers", "registry://", "oci-layout://")
    assert os.listdir(out) == []


def test_which_destinations_hold_referrers(registry_plain: RegistryServer,
                                          tmp_path: Path,
                                          monkeypatch: pytest.MonkeyPatch) -> None:
    """Whether a destination can hold referrers is a property of its output, read
    without writing anything or entering ``by_digest``; a filter answers for what it
    wraps."""
    from occystrap_core import pipeline
    from occystrap_core.api import ImageOutput
    from occystrap_core.context import Context

    def entered(self: ImageOutput) -> None:
        raise AssertionError("by_digest entered to ask")

    registry = f"registry://{registry_plain.host}/holds/x:v1"
    expected = {registry: True, f"oci-layout://{tmp_path / 'layout'}": True,
                f"tar://{tmp_path / 'x.tar'}": False, f"dir://{tmp_path / 'd'}": False}
    with Context() as ctx:
        for destination, holds in expected.items():
            output = pipeline.build_output(ctx, destination)
            monkeypatch.setattr(type(output), "by_digest", entered)
            assert output.holds_referrers is holds, destination
            filtered = pipeline.build_output(ctx, destination, ["normalize-timestamps"])
            assert filtered.holds_referrers is holds, destination
    assert os.listdir(tmp_path) == []


def test_referrers_of_many_images_point_to_sync(registry_plain: RegistryServer,
                                               listed_graph: dict[str, Any],
                                               run_cli: Callable[..., Any],
                                               expect_error: Callable[..., None]) -> None:
    """process copies many images (a glob source) without their referrers: asked for
    them, it says so and points to sync, instead of copying the images alone."""
    host, src = registry_plain.host, listed_graph["repo"]
    for extra in ((), ("--digest-tags",), ("--stale-referrers",)):
        expect_error(run_cli("--insecure", "process", "--referrers", *extra,
                             f"registry://{host}/{src}:v*",
                             f"registry://{host}/{src}-many/{{repo}}:{{tag}}"),
                     "several images", "sync --referrers")
    assert _get(registry_plain, f"{src}-many/{src}", "v1").status_code == 404


def test_a_referrer_already_there_is_listed_too(registry_plain: RegistryServer,
                                               listed_graph: dict[str, Any],
                                               run_cli: Callable[..., Any]) -> None:
    """A referrer the destination holds but its subject's fallback index does not list
    (pushed by a tool that keeps no index, as oras-py; a run cut short between the two
    PUTs) is not copied again, but listed, as pushing it would have: else the mirror
    shows no referrers, and every later run says it copied them."""
    host, src = registry_plain.host, listed_graph["repo"]
    dst = src + "-relist"
    def copy() -> None:
        result = run_cli("--insecure", "process", "--referrers",
                         f"registry://{host}/{src}:v1", f"registry://{host}/{dst}:v1")
        assert result.exit_code == 0 and "Copied 2 referrers" in result.stderr, result.output

    copy()
    tag = referrers.fallback_tag(listed_graph["image"]["digest"])
    listed = _get(registry_plain, dst, tag)
    index = listed.headers["Docker-Content-Digest"]
    assert httpx.delete(f"{registry_plain.url}/v2/{dst}/manifests/{index}").status_code == 202
    copy()
    assert _get(registry_plain, dst, tag).content == listed.content
    shown = json.loads(run_cli("--insecure", "referrers", "-O", "json",
                               f"registry://{host}/{dst}:v1").stdout)
    assert [n["digest"] for n in shown["referrers"]] == [listed_graph["sbom"]["digest"]]


def test_deleting_a_referrer_unlists_it(registry_plain: RegistryServer,
                                       listed_graph: dict[str, Any],
                                       run_cli: Callable[..., Any]) -> None:
    """On a registry without the referrers API the client that deletes a manifest with
    a subject takes it out of the subject's fallback index (distribution spec 1.1, as
    oras does), keeping the other entries."""
    host, src = registry_plain.host, listed_graph["repo"]
    sbom, signature = listed_graph["sbom"]["digest"], listed_graph["signature"]["digest"]
    tag = referrers.fallback_tag(sbom)
    other = {**listed_graph["image"], "artifactType": "application/x-other-tool"}
    index = referrers.merged(_get(registry_plain, src, tag).content, Descriptor(
        other["mediaType"], other["digest"], other["size"], artifact_type=other["artifactType"]))
    assert httpx.put(f"{registry_plain.url}/v2/{src}/manifests/{tag}", content=index,
                     headers={"Content-Type": mt.OCI_INDEX}).status_code == 201
    result = run_cli("--insecure", "delete", "--manifest", f"registry://{host}/{src}@{signature}")
    assert result.exit_code == 0, result.output
    assert [m["digest"] for m in json.loads(_get(registry_plain, src, tag).content)[
        "manifests"]] == [other["digest"]]
    shown = json.loads(run_cli("--insecure", "referrers", "-O", "json",
                               f"registry://{host}/{src}:v1").stdout)
    assert [(n["digest"], [m["digest"] for m in n["referrers"]])
            for n in shown["referrers"]] == [(sbom, [other["digest"]])]


INDEX_TAG = r"/manifests/sha256-"  # a fallback index: the tag of its subject's digest


@pytest.mark.parametrize("fault", [
    Fault("status", method="GET", path=INDEX_TAG, status=503),
    Fault("reset", method="GET", path=INDEX_TAG, offset=10),
    Fault("status", method="PUT", path=INDEX_TAG, status=502),
    Fault("lost", method="PUT", path=INDEX_TAG),
    Fault("status_after", method="PUT", path=INDEX_TAG, status=503),
], ids=lambda f: f"{f.method}-{f.kind}")
def test_the_fallback_index_is_kept_right_through_faults(
        registry_plain: RegistryServer, listed_graph: dict[str, Any],
        run_cli: Callable[..., Any], quick_clock: Any, fault: Fault) -> None:
    """The fallback index is read and rewritten by the client with a GET and a PUT:
    when listing a pushed referrer, listing one already there, and unlisting a
    deleted one. A 5xx or a reset on either is retried, and an answer lost after the
    registry stored the PUT (so the retry writes it again) leaves it listing each
    referrer once."""
    host, src = registry_plain.host, listed_graph["repo"]
    dst = f"{src}-faults"
    image, sbom = listed_graph["image"]["digest"], listed_graph["sbom"]["digest"]
    signature = listed_graph["signature"]["digest"]

    def listed(subject: str) -> list[str]:
        tag = referrers.fallback_tag(subject)
        return [m["digest"] for m in json.loads(_get(registry_plain, dst, tag).content)[
            "manifests"]]

    with FaultFront(registry_plain.url) as front:
        def through_fault(*args: str, faulted: bool = True) -> None:
            front.clear()
            front.add(dataclasses.replace(fault))
            result = run_cli("--insecure", "--retries", "3", *args)
            assert result.exit_code == 0, result.output
            assert front.injected() == faulted, [(h.method, h.path, h.status, h.fault)
                                                 for h in front.log]

        copy = ("process", "--referrers", f"registry://{host}/{src}:v1",
                f"registry://{front.host}/{dst}:v1")
        # a copy lists each referrer it pushes (no index to read yet: a reset of an
        # answer's body finds none)
        through_fault(*copy, faulted=fault.kind != "reset")
        assert listed(image) == [sbom] and listed(sbom) == [signature]
        # a referrer already there is listed when its index lost it
        index = _get(registry_plain, dst, referrers.fallback_tag(sbom))
        assert httpx.delete(f"{registry_plain.url}/v2/{dst}/manifests/"
                            f"{index.headers['Docker-Content-Digest']}").status_code == 202
        through_fault(*copy)
        assert listed(image) == [sbom] and listed(sbom) == [signature]
        # a deleted referrer leaves its subject's index
        through_fault("delete", "--manifest", f"registry://{front.host}/{dst}@{signature}")
        assert listed(image) == [sbom] and listed(sbom) == []


def test_a_lost_delete_answer_still_unlists_the_referrer(
        registry_plain: RegistryServer, listed_graph: dict[str, Any],
        run_cli: Callable[..., Any], quick_clock: Any) -> None:
    """The registry deleted the manifest but its answer was lost: the retried DELETE
    finds nothing (404). The manifest is gone all the same, so the delete succeeds and
    the fallback index no longer lists it."""
    src = listed_graph["repo"]
    sbom, signature = listed_graph["sbom"]["digest"], listed_graph["signature"]["digest"]
    tag = referrers.fallback_tag(sbom)
    with FaultFront(registry_plain.url) as front:
        front.add(Fault("lost", method="DELETE", path=f"/manifests/{signature}"))
        result = run_cli("--insecure", "--retries", "3", "delete", "--manifest",
                         f"registry://{front.host}/{src}@{signature}")
        assert result.exit_code == 0, result.output
        assert front.injected() == 1
    assert _get(registry_plain, src, signature).status_code == 404
    assert json.loads(_get(registry_plain, src, tag).content)["manifests"] == []


def test_what_does_not_refer_to_the_image_is_not_copied(registry_plain: RegistryServer,
                                                        listed_graph: dict[str, Any],
                                                        run_cli: Callable[..., Any]) -> None:
    """A fallback tag's index is an ordinary tag anyone can write: an entry whose
    manifest names no subject, or another one, is left behind with a warning."""
    host, src = registry_plain.host, listed_graph["repo"]
    other = push_sample_image(registry_plain, src, "other", layers=[{"etc/x": b"x\n"}])
    tag = referrers.fallback_tag(listed_graph["image"]["digest"])
    index = _get(registry_plain, src, tag).content
    for stray in (other.manifest_digest, listed_graph["signature"]["digest"]):
        data = _get(registry_plain, src, stray).content
        index = referrers.merged(index, referrers.descriptor_of(parse(data)))
    response = httpx.put(f"{registry_plain.url}/v2/{src}/manifests/{tag}", content=index,
                         headers={"Content-Type": mt.OCI_INDEX})
    assert response.status_code == 201
    dst = src + "-strict"
    copied = run_cli("--insecure", "process", "--referrers", f"registry://{host}/{src}:v1",
                     f"registry://{host}/{dst}:v1")
    assert copied.exit_code == 0, copied.output
    assert "Copied 2 referrers" in copied.stderr
    assert f"{other.manifest_digest} is listed as a referrer" in copied.stderr
    assert _get(registry_plain, dst, other.manifest_digest).status_code == 404
    listed = json.loads(_get(registry_plain, dst, tag).content)["manifests"]
    assert [m["digest"] for m in listed] == [listed_graph["sbom"]["digest"]]


def test_a_listing_of_the_empty_type_is_checked_against_the_manifest(
        registry_plain: RegistryServer, listed_graph: dict[str, Any],
        run_cli: Callable[..., Any]) -> None:
    """GHCR's fallback index lists cosign bundles with artifactType the empty type:
    --referrer-type then reads the manifest's own type."""
    host, src = registry_plain.host, listed_graph["repo"]
    tag = referrers.fallback_tag(listed_graph["image"]["digest"])
    index = json.loads(_get(registry_plain, src, tag).content)
    for entry in index["manifests"]:
        entry["artifactType"] = mt.OCI_EMPTY
    response = httpx.put(f"{registry_plain.url}/v2/{src}/manifests/{tag}",
                         content=json.dumps(index).encode(),
                         headers={"Content-Type": mt.OCI_INDEX})
    assert response.status_code == 201
    for kind, count in (("application/spdx+json", 2),
                        ("application/vnd.dev.sigstore.bundle.v0.3+json", 0)):
        copied = run_cli("--insecure", "process", "--referrers", "--referrer-type", kind,
                         f"registry://{host}/{src}:v1",
                         f"registry://{host}/{src}-typed-{count}:v1")
        assert copied.exit_code == 0, copied.output
        assert f"Copied {count} referrers" in copied.stderr, copied.stderr


@pytest.mark.parametrize("listed_as", [mt.OCI_EMPTY, None])
def test_referrers_of_a_type_read_an_untyped_listing_as_copy_does(
        registry_plain: RegistryServer, listed_graph: dict[str, Any],
        run_cli: Callable[..., Any], listed_as: str | None) -> None:
    """A fallback index that lists a referrer as of the empty type (GHCR) or of none
    (written by hand): ``referrers --artifact-type`` reads the manifest's own type."""
    host, src = registry_plain.host, listed_graph["repo"]
    tag = referrers.fallback_tag(listed_graph["image"]["digest"])
    index = json.loads(_get(registry_plain, src, tag).content)
    for entry in index["manifests"]:
        entry.pop("artifactType")
        if listed_as:
            entry["artifactType"] = listed_as
    response = httpx.put(f"{registry_plain.url}/v2/{src}/manifests/{tag}",
                         content=json.dumps(index).encode(),
                         headers={"Content-Type": mt.OCI_INDEX})
    assert response.status_code == 201
    for kind, expected in (("application/spdx+json", [listed_graph["sbom"]["digest"]]),
                           ("application/vnd.dev.sigstore.bundle.v0.3+json", [])):
        shown = run_cli("--insecure", "referrers", "--artifact-type", kind,
                        f"registry://{host}/{src}:v1", "-O", "json")
        assert shown.exit_code == 0, shown.output
        found = json.loads(shown.stdout)["referrers"]
        assert [n["digest"] for n in found] == expected
        if expected:  # and what refers to it is still followed
            assert [n["digest"] for n in found[0]["referrers"]] == [
                listed_graph["signature"]["digest"]]


def test_a_redirected_referrers_api_is_no_referrers_api(registry_plain: RegistryServer,
                                                        listed_graph: dict[str, Any],
                                                        run_cli: Callable[..., Any]) -> None:
    """GHCR answers the referrers API with a redirect to its rate-limited web API:
    that is read as no API (the fallback tag is used), and never followed."""
    src = listed_graph["repo"]
    with FaultFront(registry_plain.url) as web, FaultFront(registry_plain.url) as front:
        web.add(Fault("status", status=429, retry_after="60", times=-1))
        front.add(Fault("redirect", path="/referrers/", location=web.url, times=-1))
        copied = run_cli("--insecure", "process", "--referrers",
                         f"registry://{front.host}/{src}:v1",
                         f"registry://{registry_plain.host}/{src}-redirected:v1")
        assert copied.exit_code == 0, copied.output
        assert "Copied 2 referrers" in copied.stderr
        assert web.log == []
        # the image, the SBOM and the signature were each asked once
        assert [h.status for h in front.log if "/referrers/" in h.path] == [307] * 3


def test_a_changed_image_leaves_its_referrers_behind(registry_plain: RegistryServer,
                                                     listed_graph: dict[str, Any],
                                                     run_cli: Callable[..., Any]) -> None:
    host, src = registry_plain.host, listed_graph["repo"]
    dst = src + "-filtered"
    result = run_cli("--insecure", "process", "--referrers", "-f", "normalize-timestamps",
                     f"registry://{host}/{src}:v1", f"registry://{host}/{dst}:v1")
    assert result.exit_code == 0, result.output
    assert "Warning: the copy changed the image" in result.stderr
    shown = run_cli("--insecure", "referrers", f"registry://{host}/{dst}:v1", "-O", "json")
    assert json.loads(shown.stdout)["referrers"] == []
    asked = run_cli("--insecure", "process", "--referrers", "--stale-referrers", "-f",
                    "normalize-timestamps", f"registry://{host}/{src}:v1",
                    f"registry://{host}/{dst}:v1")
    assert asked.exit_code == 0 and "Copied 2 referrers" in asked.stderr
    tag = referrers.fallback_tag(listed_graph["image"]["digest"])  # the source image's
    stale = json.loads(_get(registry_plain, dst, tag).content)["manifests"]
    assert [d["digest"] for d in stale] == [listed_graph["sbom"]["digest"]]


def test_referrers_travel_through_an_oci_layout(registry_plain: RegistryServer,
                                                listed_graph: dict[str, Any],
                                                run_cli: Callable[..., Any],
                                                tmp_path: Path) -> None:
    """registry -> oci-layout -> registry with --referrers: the layout lists them in
    index.json (untagged, with their artifactType), and they come back out of it."""
    host, src = registry_plain.host, listed_graph["repo"]
    layout = f"oci-layout://{tmp_path / 'layout'}"

    def tree(uri: str) -> Any:
        shown = run_cli("--insecure", "referrers", uri, "-O", "json")
        assert shown.exit_code == 0, shown.output
        return json.loads(shown.stdout)

    for source, destination in ((f"registry://{host}/{src}:v1", f"{layout}?ref=v1"),
                                (layout, f"registry://{host}/{src}-back:v1")):
        result = run_cli("--insecure", "process", "--referrers", source, destination)
        assert result.exit_code == 0, result.output
        assert "Copied 2 referrers" in result.stderr
    index = json.loads((tmp_path / "layout" / "index.json").read_text())
    assert sorted(e.get("artifactType", "") for e in index["manifests"]) == [
        "", "application/spdx+json", "application/vnd.dev.sigstore.bundle.v0.3+json"]
    assert tree(f"registry://{host}/{src}:v1") == tree(layout) == \
        tree(f"registry://{host}/{src}-back:v1")


def test_a_registry_with_the_referrers_api(registry_plain: RegistryServer,
                                           listed_graph: dict[str, Any],
                                           run_cli: Callable[..., Any]) -> None:
    """Through a front that gives the registry the API: occystrap lists through it,
    and leaves the index to it when pushing (the answer carries OCI-Subject)."""
    from occystrap_core.testing.referrers_api import ReferrersFront

    src, dst = listed_graph["repo"], listed_graph["repo"] + "-api"
    with ReferrersFront(registry_plain.url) as front:
        copied = run_cli("--insecure", "process", "--referrers",
                         f"registry://{registry_plain.host}/{src}:v1",
                         f"registry://{front.host}/{dst}:v1")
        assert copied.exit_code == 0, copied.output
        assert "Copied 2 referrers" in copied.stderr
        def fallback_hits() -> list[Any]:  # the fallback indexes (not cosign's tags)
            return [h for h in front.log if re.search(r"/manifests/sha256-[0-9a-f]{64}$",
                                                      h.path)]

        assert not fallback_hits()  # the API's job
        shown = run_cli("--insecure", "referrers", f"registry://{front.host}/{dst}:v1",
                        "-O", "json")
        assert [h.path for h in front.log if "/referrers/" in h.path]
        assert not fallback_hits()
        only = run_cli("--insecure", "referrers", "--artifact-type", "application/x-none",
                       f"registry://{front.host}/{dst}:v1", "-O", "json")
    original = run_cli("--insecure", "referrers", f"registry://{registry_plain.host}/{src}:v1",
                       "-O", "json")
    assert json.loads(shown.stdout) == json.loads(original.stdout)
    assert json.loads(only.stdout)["referrers"] == []


def test_cosign_legacy_tags_are_listed_and_copied(registry_plain: RegistryServer,
                                                  listed_graph: dict[str, Any],
                                                  run_cli: Callable[..., Any],
                                                  tmp_path: Path) -> None:
    host, src = registry_plain.host, listed_graph["repo"]
    dst = src + "-cosign"
    tag = referrers.fallback_tag(listed_graph["image"]["digest"]) + ".sig"
    sig = oras_artifact(registry_plain, src, tag,
                        "application/vnd.dev.cosign.simplesigning.v1+json",
                        b'{"critical": {}}', None, tmp_path)
    shown = json.loads(run_cli("--insecure", "referrers", f"registry://{host}/{src}:v1",
                               "-O", "json").stdout)
    assert shown["legacy_tags"] == [{"tag": tag, "digest": sig["digest"]}]
    result = run_cli("--insecure", "process", "--referrers", "--digest-tags",
                     f"registry://{host}/{src}:v1", f"registry://{host}/{dst}:v1")
    assert result.exit_code == 0, result.output
    assert "Copied 2 referrers and 1 digest tags" in result.stderr
    assert _get(registry_plain, dst, tag).content == _get(registry_plain, src, tag).content
    without = run_cli("--insecure", "process", "--referrers", f"registry://{host}/{src}:v1",
                      f"registry://{host}/{dst}-plain:v1")
    assert without.exit_code == 0 and _get(registry_plain, f"{dst}-plain", tag).status_code == 404


def test_sync_referrers_keeps_a_mirror_signed(registry_plain: RegistryServer,
                                              listed_graph: dict[str, Any],
                                              run_cli: Callable[..., Any],
                                              tmp_path: Path) -> None:
    """sync --referrers copies the graph with the image, and a later run brings a new
    signature of an image that did not change."""
    host, src = registry_plain.host, listed_graph["repo"]
    mirror = f"registry://{host}/mirrored/{{repo}}:{{tag}}"
    first = run_cli("--insecure", "sync", "--referrers", f"registry://{host}/{src}:v1", mirror)
    assert first.exit_code == 0, first.output

    def tree(repo: str) -> Any:
        shown = run_cli("--insecure", "referrers", f"registry://{host}/{repo}:v1", "-O", "json")
        assert shown.exit_code == 0, shown.output
        return json.loads(shown.stdout)

    assert tree(f"mirrored/{src}") == tree(src)
    late = oras_artifact(registry_plain, src, "late-sig",
                         "application/vnd.dev.sigstore.bundle.v0.3+json", b'{"late": 1}',
                         listed_graph["image"], tmp_path)
    tag = referrers.fallback_tag(listed_graph["image"]["digest"])
    data = _get(registry_plain, src, late["digest"]).content
    index = referrers.merged(_get(registry_plain, src, tag).content,
                             referrers.descriptor_of(parse(data, mt.OCI_MANIFEST)))
    assert httpx.put(f"{registry_plain.url}/v2/{src}/manifests/{tag}", content=index,
                     headers={"Content-Type": mt.OCI_INDEX}).status_code == 201
    again = run_cli("--insecure", "sync", "--referrers", f"registry://{host}/{src}:v1", mirror,
                    "-O", "json")
    assert again.exit_code == 0, again.output
    assert json.loads(again.stdout)["counts"] == {"skipped": 1}  # the image did not change
    assert late["digest"] in [n["digest"] for n in tree(f"mirrored/{src}")["referrers"]]
    assert tree(f"mirrored/{src}") == tree(src)
    import oras.provider  # and oras reads the same index in the mirror

    witness = oras.provider.Registry(hostname=host, insecure=True)
    seen = [witness.get_manifest(f"{host}/{repo}:{tag}")["manifests"]
            for repo in (src, f"mirrored/{src}")]
    assert seen[0] == seen[1]


def test_a_layout_of_platform_entries_and_referrers(tmp_path: Path,
                                                    run_cli: Callable[..., Any]) -> None:
    """index.json listing one image's platforms directly (as Docker 25 writes it) and a
    referrer: read without ?ref=, the image is the platforms, not the referrer."""
    from occystrap_core.testing import images

    arches = [images.sample_image(tag="v1", architecture=a, seed=i)
              for i, a in enumerate(("amd64", "arm64"))]
    files, index = images.multi_platform_blobs(arches, "v1")
    platforms = json.loads(index)["manifests"]
    empty = b"{}"
    sbom = json.dumps({"schemaVersion": 2, "mediaType": mt.OCI_MANIFEST,
                       "artifactType": "application/spdx+json",
                       "config": {"mediaType": mt.OCI_EMPTY, "digest": sha(empty), "size": 2},
                       "layers": [{"mediaType": mt.OCI_EMPTY, "digest": sha(empty), "size": 2}],
                       "subject": platforms[0]}).encode()
    for blob in (empty, sbom):
        files[f"blobs/sha256/{sha(blob).split(':')[1]}"] = blob
    referrer = {"mediaType": mt.OCI_MANIFEST, "digest": sha(sbom), "size": len(sbom),
                "artifactType": "application/spdx+json"}
    files["index.json"] = json.dumps({"schemaVersion": 2, "mediaType": mt.OCI_INDEX,
                                      "manifests": platforms + [referrer]}).encode()
    images.write_files(str(tmp_path / "layout"), files)
    layout = f"oci-layout://{tmp_path / 'layout'}"
    info = run_cli("info", layout, "-O", "json")
    assert info.exit_code == 0, info.output
    assert json.loads(info.stdout)["platforms"] == ["linux/amd64", "linux/arm64"]
    copied = run_cli("--all-platforms", "process", layout, f"oci-layout://{tmp_path / 'out'}")
    assert copied.exit_code == 0, copied.output
    top = json.loads((tmp_path / "out" / "index.json").read_text())["manifests"][0]
    written = json.loads((tmp_path / "out" / "blobs" / "sha256" /
                          top["digest"].split(":")[1]).read_text())
    assert [m["digest"] for m in written["manifests"]] == [p["digest"] for p in platforms]


def test_referrers_copied_at_once_are_all_listed(registry_plain: RegistryServer,
                                                 run_cli: Callable[..., Any],
                                                 tmp_path: Path) -> None:
    """Two artifacts of one subject copied at once each add themselves to the fallback
    tag index, which is read and then rewritten: one at a time, so neither is lost."""
    repo = f"src/refs-{os.urandom(4).hex()}"
    image = push_sample_image(registry_plain, repo, "v1")
    subject = {"mediaType": mt.OCI_MANIFEST, "digest": image.manifest_digest,
               "size": len(image.manifest)}
    made = [oras_artifact(registry_plain, repo, kind, f"application/x-{kind}",
                          kind.encode(), subject, tmp_path) for kind in ("sbom", "vex")]
    dst, tag = repo + "-mirror", referrers.fallback_tag(image.manifest_digest)
    with FaultFront(registry_plain.url) as front:
        # each read of the index waits, so that both artifacts read it before either writes
        front.add(Fault("stall", method="GET", path=f"/v2/{dst}/manifests/{tag}",
                        seconds=0.5, times=-1))
        result = run_cli("--insecure", "process", "-J", "3", f"registry://{front.host}/{repo}:*",
                         f"registry://{front.host}/{dst}:{{tag}}")
        assert result.exit_code == 0, result.output
        assert front.injected() == 2
    listed = json.loads(_get(registry_plain, dst, tag).content)["manifests"]
    assert sorted(d["digest"] for d in listed) == sorted(d["digest"] for d in made)
