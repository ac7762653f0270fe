"""occystrap-proxy: ``occystrap proxy``, a registry front that filters images on the way."""
