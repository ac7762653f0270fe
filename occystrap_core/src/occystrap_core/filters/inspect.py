"""``inspect``: append the image's layer history to a file as one JSON line.

The line is ``{"name": "NAME:TAG", "layers": [...]}`` with sorted keys, newest
layer first; each layer has ``Id`` (its diff_id as this filter sees the image),
``Size`` (uncompressed when known, else stored), ``Created``, ``CreatedBy`` and
``Comment`` from the non-empty history entries, and the top layer ``Tags``. Like
``docker history``, but for any source. Written only when the output finishes.
"""

from __future__ import annotations

import json
import threading
from typing import Any

from ..api import Image, ImageFilter, ImageOutput, OutputResult

_APPEND_LOCK = threading.Lock()


def history_record(image: Image) -> dict[str, Any]:
    config = image.config_json
    history = [h for h in config.get("history") or () if isinstance(h, dict)
               and not h.get("empty_layer")]
    diff_ids = image.diff_ids
    layers = []
    for layer in image.layers:
        i = layer.index
        entry = history[i] if i < len(history) else {}
        layers.append({
            "Id": diff_ids[i] if i < len(diff_ids) else layer.diff_id or layer.digest,
            "Size": layer.uncompressed_size if layer.uncompressed_size is not None
            else layer.size or 0,
            "Created": entry.get("created"),
            "CreatedBy": entry.get("created_by"),
            "Comment": entry.get("comment"),
            "Tags": None,
        })
    layers.reverse()
    if layers and image.reference:
        layers[0]["Tags"] = [image.reference]
    return {"name": image.reference, "layers": layers}


class Inspect(ImageFilter):
    def __init__(self, inner: ImageOutput, path: str):
        super().__init__(inner)
        self.path = path

    def finish(self, image: Image) -> OutputResult:
        result = self.inner.finish(image)
        line = json.dumps(history_record(image), sort_keys=True)
        with _APPEND_LOCK, open(self.path, "a", encoding="utf-8") as f:
            f.write(line + "\n")
        return result
