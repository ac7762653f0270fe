"""What ``occystrap info`` reports about an image, as a dict and as text."""

from __future__ import annotations

import json
from typing import Any

from .api import Image
from .errors import NOT_JSON
from .oci.platform import Platform


def human_size(n: int | None) -> str:
    if n is None:
        return "?"
    size = float(n)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if size < 1024 or unit == "TiB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    raise AssertionError("unreachable")


def describe(image: Image, platforms: list[Platform] | None = None,
             entries: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    """``platforms``: those of the index the image came from, when the input lists them,
    and ``entries`` that index's entries (digest and platform of each). An artifact's
    config need not be JSON: its image fields are then empty."""
    config = _config_of(image)
    cc = config.get("config") or {}
    history = [h for h in config.get("history", []) if not h.get("empty_layer")]
    diff_ids = image.diff_ids
    layers = []
    for layer in image.layers:
        i = layer.index
        layers.append({
            "index": i,
            "digest": layer.digest,
            "size": layer.size,
            "media_type": layer.media_type,
            "compression": layer.compression,
            "diff_id": diff_ids[i] if i < len(diff_ids) else layer.diff_id,
            # a stored uncompressed tar is its own uncompressed size
            "uncompressed_size": layer.uncompressed_size if layer.uncompressed_size is not None
            else layer.size if layer.compression == "none" else None,
            "created_by": history[i].get("created_by") if i < len(history) else None,
            **({"urls": list(layer.urls)} if layer.urls else {}),
        })
    return {
        "name": image.name,
        "tag": image.tag,
        "manifest_digest": image.manifest_digest,
        "manifest_media_type": image.manifest_media_type,
        "platforms": [str(p) for p in platforms] if platforms is not None else None,
        "artifact_type": image.artifact_type,
        "config_media_type": image.config_media_type,
        "subject": (image.extras.get("subject") or {}).get("digest"),
        "annotations": dict(image.extras.get("annotations") or {}),
        "config_digest": image.config_digest,
        "config_size": len(image.config),
        "os": config.get("os"),
        "architecture": config.get("architecture"),
        "variant": config.get("variant"),
        "created": config.get("created"),
        "author": config.get("author"),
        "layer_count": len(image.layers),
        "total_size": sum(l.size or 0 for l in image.layers),
        "total_uncompressed_size": None if any(l["uncompressed_size"] is None for l in layers)
        else sum(l["uncompressed_size"] for l in layers),
        "layers": layers,
        "history_count": len(config.get("history", [])),
        "env": cc.get("Env") or [],
        "entrypoint": cc.get("Entrypoint"),
        "cmd": cc.get("Cmd"),
        "working_dir": cc.get("WorkingDir") or None,
        "user": cc.get("User") or None,
        "labels": cc.get("Labels") or {},
        "exposed_ports": sorted(cc.get("ExposedPorts") or {}),
        "volumes": sorted(cc.get("Volumes") or {}),
        "index_manifests": entries,
        **_legacy_fields(image, config, layers),
    }


def _legacy_fields(image: Image, config: dict[str, Any],
                   layers: list[dict[str, Any]]) -> dict[str, Any]:
    """The names occystrap 0.4.17's ``info -O json`` gave, kept for its users' scripts."""
    schema = None
    if image.manifest is not None:
        try:
            schema = json.loads(image.manifest).get("schemaVersion")
        except (*NOT_JSON, AttributeError):
            pass
    return {
        "image": image.name,
        "schema_version": schema,
        "media_type": image.manifest_media_type,
        "total_compressed_size": sum(l["size"] or 0 for l in layers),  # as stored
        "diff_ids": list(image.diff_ids),
        "empty_layer_count": sum(1 for h in config.get("history", []) if h.get("empty_layer")),
    }


def _config_of(image: Image) -> dict[str, Any]:
    if not image.is_artifact:
        return image.config_json
    try:
        value = json.loads(image.config)
    except NOT_JSON:
        return {}
    return value if isinstance(value, dict) else {}


def as_text(info: dict[str, Any]) -> str:
    platform = "/".join(p for p in (info["os"], info["architecture"], info["variant"]) if p)
    name = info["name"] or "(unnamed)"
    lines = [f"Image:         {name}{':' + info['tag'] if info['tag'] else ''}"]
    if info["manifest_digest"]:
        lines += [f"Manifest:      {info['manifest_digest']}",
                  f"Media type:    {info['manifest_media_type']}"]
    if info["platforms"]:
        lines.append(f"Platforms:     {', '.join(info['platforms'])}")
    if info["artifact_type"]:
        lines += [f"Artifact:      {info['artifact_type']}",
                  f"Config type:   {info['config_media_type']}"]
    if info["subject"]:
        lines.append(f"Subject:       {info['subject']}")
    lines += [f"Platform:      {platform or '?'}",
              f"Created:       {info['created'] or '?'}",
              f"Config:        {info['config_digest']} ({info['config_size']} bytes)",
              f"Layers:        {info['layer_count']}, {human_size(info['total_size'])} stored"
              + (f", {human_size(info['total_uncompressed_size'])} uncompressed"
                 if info["total_uncompressed_size"] is not None else "")]
    for layer in info["layers"]:
        created_by = (layer["created_by"] or "").replace("\n", " ")
        if len(created_by) > 50:
            created_by = created_by[:47] + "..."
        lines.append(f"  {layer['index']:>3}  {layer['digest']}  {human_size(layer['size']):>10}"
                     f"  {human_size(layer['uncompressed_size']):>10}"
                     f"  {layer['compression'] or '?':<5} {created_by}")
    if info.get("referrers"):
        from .oci.referrers import as_text as tree_text

        lines += ["Referrers:"] + ["  " + line for line in tree_text(info["referrers"])]
    for key, label in (("entrypoint", "Entrypoint"), ("cmd", "Cmd"), ("working_dir", "WorkingDir"),
                       ("user", "User")):
        if info[key]:
            value = info[key] if isinstance(info[key], str) else json.dumps(info[key])
            lines.append(f"{label + ':':<15}{value}")
    for env in info["env"]:
        lines.append(f"Env:           {env}")
    for k, v in sorted(info["labels"].items()):
        lines.append(f"Label:         {k}={v}")
    for k, v in sorted(info["annotations"].items()):
        lines.append(f"Annotation:    {k}={v}")
    return "\n".join(lines)
