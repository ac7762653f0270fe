"""occystrap plugin: Docker and Podman daemons over their unix socket."""
