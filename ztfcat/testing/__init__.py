"""Alerts and archives made up for tests, benchmarks and the demo: synthetic nights and a local archive server."""
