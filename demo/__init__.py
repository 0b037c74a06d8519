"""The demo stand-in of outside systems (Kubernetes, Prometheus, an SSH host, feature flags) for
``ooda serve`` on the example config. Not deployed: real teams point the tools at their own
systems.
"""
