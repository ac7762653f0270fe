"""A third-party plugin: ``dummy://NAME`` is a one-layer image made up in memory."""

from occystrap_core import hookimpl
from occystrap_core.types import InputSource


def _factory(uri, ctx):
    from .source import DummyInput

    return DummyInput(uri.target)


@hookimpl
def occystrap_input_sources():
    yield InputSource(name="dummy", schemes=("dummy",), summary="Made-up one-layer images",
                      factory=_factory)
