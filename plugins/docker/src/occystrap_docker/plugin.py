"""Entry-point module of occystrap-docker: hook implementations only, no heavy imports.

The implementation modules (requests, cryptography, the tarball plugin) are
imported by the factories, the first time one of the schemes is used.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING

from occystrap_core import hookimpl
from occystrap_core.types import InputSource, OptionSpec, OutputTarget

if TYPE_CHECKING:
    from occystrap_core.api import ImageInput, ImageOutput
    from occystrap_core.context import Context
    from occystrap_core.types import ResolvedURI

_SOCKET = OptionSpec("socket", help="daemon socket path (default: DOCKER_HOST=unix://..., "
                                    "else /var/run/docker.sock)")


def _docker_input(uri: ResolvedURI, ctx: Context) -> ImageInput:
    from .docker_input import DockerInput

    return DockerInput(uri, ctx)


def _dockerpush_input(uri: ResolvedURI, ctx: Context) -> ImageInput:
    from .dockerpush_input import DockerPushInput

    return DockerPushInput(uri, ctx)


def _docker_output(uri: ResolvedURI, ctx: Context) -> ImageOutput:
    from .docker_output import DockerOutput

    return DockerOutput(uri, ctx)


@hookimpl
def occystrap_input_sources() -> Iterator[InputSource]:
    yield InputSource(
        name="docker", schemes=("docker",), factory=_docker_input, options=(_SOCKET,),
        summary="image in a Docker or Podman daemon, via docker save (docker://IMAGE[:TAG])")
    yield InputSource(
        name="dockerpush", schemes=("dockerpush",), factory=_dockerpush_input,
        summary="image in a Docker or Podman daemon, pushed to an embedded registry "
                "(dockerpush://IMAGE[:TAG]): keeps the pushed manifest and compressed layers",
        options=(_SOCKET, OptionSpec("timeout", float, default=300.0,
                                     help="seconds to wait for the push (default 300)")))


@hookimpl
def occystrap_output_targets() -> Iterator[OutputTarget]:
    yield OutputTarget(
        name="docker", schemes=("docker",), factory=_docker_output, options=(_SOCKET,),
        summary="load into a Docker or Podman daemon as IMAGE:TAG (docker://IMAGE[:TAG])")
