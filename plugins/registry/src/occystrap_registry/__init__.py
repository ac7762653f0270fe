"""occystrap plugin: Docker Registry V2 / OCI Distribution registries."""
