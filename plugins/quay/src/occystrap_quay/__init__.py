"""occystrap plugin: Bulk listing and mirroring of Quay namespaces."""
