"""occystrap plugin: docker-save and OCI archives, OCI image layouts."""
