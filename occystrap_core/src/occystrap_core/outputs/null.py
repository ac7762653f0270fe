"""An output that keeps nothing: for commands that only look at an image (``search``)."""

from __future__ import annotations

from ..api import Image, ImageOutput, Layer, LayerData, OutputResult


class NullOutput(ImageOutput):
    def wants_layer(self, layer: Layer) -> bool:
        return False

    def add_layer(self, data: LayerData) -> None:
        raise AssertionError("NullOutput wants no layer")

    def finish(self, image: Image) -> OutputResult:
        return OutputResult(location="(nothing written)")
