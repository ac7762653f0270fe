"""The shared HTTP stack: every plugin's httpx client is built here."""
