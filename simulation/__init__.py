"""Simulated labelers: clients of the labeling app, in process or over its HTTP API."""
