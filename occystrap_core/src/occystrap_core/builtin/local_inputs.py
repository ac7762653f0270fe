"""The core's local source: dir://, what the dir:// output wrote.

The implementation lives in :mod:`occystrap_core.inputs.directory`, imported on use.
"""

from __future__ import annotations

from collections.abc import Iterator

from .. import hookimpl
from ..types import InputSource, OptionSpec, lazy


@hookimpl
def occystrap_input_sources() -> Iterator[InputSource]:
    yield InputSource(
        name="dir", schemes=("dir",), factory=lazy("occystrap_core.inputs.directory:open_dir"),
        summary="directory the dir:// output wrote, read back as an image (dir://PATH)",
        options=(OptionSpec("image", str, "NAME:TAG of the image to read, when it holds several"),
                 OptionSpec("index", int, "position of the image to read, from 0")))
