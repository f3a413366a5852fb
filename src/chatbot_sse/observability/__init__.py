"""Logging and metrics: how the server tells operators what it is doing."""
