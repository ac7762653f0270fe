"""Entry-point module of occystrap-docker: hook implementations only, no heavy imports.

The implementation modules (requests, cryptography) are
imported by the factories, the first time one of the schemes is used.
"""

from __future__ import annotations

from collections.abc import Iterator

from occystrap_core import hookimpl
from occystrap_core.types import InputSource, OptionSpec, OutputTarget, lazy

_SOCKET = OptionSpec("socket", help="daemon socket path (default: DOCKER_HOST=unix://..., "
                                    "else the docker context's, else /var/run/docker.sock)")


@hookimpl
def occystrap_input_sources() -> Iterator[InputSource]:
    yield InputSource(
        name="docker", schemes=("docker",),
        factory=lazy("occystrap_docker.docker_input:DockerInput"), options=(_SOCKET,),
        summary="image in a Docker or Podman daemon, via docker save (docker://IMAGE[:TAG])")
    yield InputSource(
        name="dockerpush", schemes=("dockerpush",),
        factory=lazy("occystrap_docker.dockerpush_input:DockerPushInput"),
        summary="image in a Docker or Podman daemon, pushed to an embedded registry "
                "(dockerpush://IMAGE[:TAG]): keeps the pushed manifest and compressed layers",
        options=(_SOCKET, OptionSpec("timeout", float, default=300.0,
                                     help="seconds to wait for the push (default 300)")))


@hookimpl
def occystrap_output_targets() -> Iterator[OutputTarget]:
    yield OutputTarget(
        name="docker", schemes=("docker",),
        factory=lazy("occystrap_docker.docker_output:DockerOutput"), options=(_SOCKET,),
        summary="load into a Docker or Podman daemon as IMAGE:TAG (docker://IMAGE[:TAG])")
