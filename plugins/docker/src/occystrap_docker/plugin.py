"""Entry-point module of occystrap-docker: hook implementations only, no heavy imports.

Registered so that the distribution is discovered and listed; its schemes arrive
with the issue that builds it.
"""
