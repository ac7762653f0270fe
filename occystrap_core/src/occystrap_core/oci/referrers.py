"""Referrers: the artifacts (signatures, SBOMs, attestations) whose ``subject`` is a
manifest, as the distribution spec 1.1 lists them.

A registry with the referrers API answers ``GET /v2/<name>/referrers/<digest>`` with an
OCI index. Without it, clients keep that index themselves under the *fallback tag*
``<alg>-<hex>`` of the subject's digest, and every client pushing a manifest with a
subject MUST add it there, keeping what other tools put there. Older cosign wrote its
signatures, attestations and SBOMs to the tags ``<alg>-<hex>.sig``, ``.att``, ``.sbom``.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Collection
from typing import Any

from .. import digest as digests
from .. import mediatypes as mt
from ..errors import NOT_JSON
from .manifest import Descriptor, Index, Manifest, parse

LEGACY_SUFFIXES = (".sig", ".att", ".sbom")


def fallback_tag(digest: str) -> str:
    """The tag a registry without the referrers API keeps ``digest``'s referrers under."""
    algorithm, hexpart = digests.validate(digest, "subject digest").split(":", 1)
    return f"{algorithm}-{hexpart}"[:128]


def legacy_tags(digest: str) -> list[str]:
    """Cosign's tags for ``digest``'s signature, attestation and SBOM."""
    return [fallback_tag(digest) + suffix for suffix in LEGACY_SUFFIXES]


def descriptor_of(doc: Manifest | Index) -> Descriptor:
    """How a referrers index lists ``doc``: its artifactType (else, for a manifest, its
    config's media type) and its annotations, as the spec says."""
    artifact_type = doc.artifact_type or (
        doc.config.media_type if isinstance(doc, Manifest) else None)
    return Descriptor(doc.media_type, doc.digest, len(doc.data),
                      annotations=dict(doc.annotations), artifact_type=artifact_type)


def listed(data: bytes, artifact_type: str | None = None) -> list[Descriptor]:
    """The descriptors a referrers index lists (of ``artifact_type`` when given)."""
    index = parse(data, mt.OCI_INDEX, "the referrers index")
    if not isinstance(index, Index):
        return []
    return [d for d in index.manifests
            if artifact_type is None or d.artifact_type == artifact_type]


def merged(existing: bytes | None, referrer: Descriptor) -> bytes:
    """The fallback index with ``referrer`` in it: whatever else it lists (another
    tool's entries) is kept as written; an entry for the same digest is replaced."""
    doc: dict[str, Any] = {"schemaVersion": 2, "mediaType": mt.OCI_INDEX, "manifests": []}
    if existing is not None:
        try:
            found = json.loads(existing)
        except NOT_JSON:
            found = None
        if isinstance(found, dict) and isinstance(found.get("manifests"), list):
            doc = found
    doc["manifests"] = [m for m in doc["manifests"]
                        if not (isinstance(m, dict) and m.get("digest") == referrer.digest)]
    doc["manifests"].append(referrer.json())
    return json.dumps(doc, separators=(",", ":")).encode()


def without(existing: bytes, digest: str) -> bytes | None:
    """The fallback index with ``digest``'s entry taken out, every other kept as
    written; None when it does not list it (or is no index)."""
    try:
        doc = json.loads(existing)
    except NOT_JSON:
        return None
    if not isinstance(doc, dict) or not isinstance(doc.get("manifests"), list):
        return None
    kept = [m for m in doc["manifests"] if not (isinstance(m, dict) and m.get("digest") == digest)]
    if len(kept) == len(doc["manifests"]):
        return None
    return json.dumps({**doc, "manifests": kept}, separators=(",", ":")).encode()


def kind(doc: Manifest | Index) -> str | None:
    """What a referrer is, as a referrers index lists it."""
    return doc.kind if isinstance(doc, Manifest) else doc.artifact_type


def of_types(found: Descriptor, types: Collection[str],
             fetch: Callable[[], Manifest | Index]) -> bool:
    """Whether the listed referrer ``found`` is of one of ``types``: as its descriptor
    says, else as the manifest itself (``fetch()``) says: GHCR's fallback index lists
    cosign bundles as of the empty type, and a hand-kept index may leave it out."""
    listed = None if found.artifact_type == mt.OCI_EMPTY else found.artifact_type
    return (listed or kind(fetch())) in types


MAX_DEPTH = 8  # referrers of referrers of...: deeper than this is not followed


def tree(lister: Callable[[str], list[Descriptor]], digest: str,
         wanted: Callable[[Descriptor], bool] | None = None) -> list[dict[str, Any]]:
    """``digest``'s referrers (those ``wanted`` keeps, when given: see :func:`of_types`),
    each with its own referrers (a signature of an SBOM), as JSON-ready objects;
    ``lister(digest)`` lists one level."""
    seen = {digest}

    def walk(subject: str, depth: int) -> list[dict[str, Any]]:
        nodes = []
        for d in lister(subject):
            if depth == 0 and wanted is not None and not wanted(d):
                continue
            node: dict[str, Any] = {"mediaType": d.media_type, "digest": d.digest,
                                    "size": d.size, "artifactType": d.artifact_type,
                                    "annotations": dict(d.annotations), "referrers": []}
            if d.digest not in seen and depth + 1 < MAX_DEPTH:
                seen.add(d.digest)
                node["referrers"] = walk(d.digest, depth + 1)
            nodes.append(node)
        return nodes

    return walk(digest, 0)


def as_text(nodes: list[dict[str, Any]], indent: str = "") -> list[str]:
    """The tree as lines: type, digest, size and annotations of each referrer."""
    lines = []
    for i, node in enumerate(nodes):
        last = i == len(nodes) - 1
        notes = ", ".join(f"{k}={v}" for k, v in sorted(node["annotations"].items()))
        lines.append(f"{indent}{'└── ' if last else '├── '}{node['artifactType'] or '?'} "
                     f"{node['digest']} ({node['size']} bytes)" + (f" {notes}" if notes else ""))
        lines += as_text(node["referrers"], indent + ("    " if last else "│   "))
    return lines
