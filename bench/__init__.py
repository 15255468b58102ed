"""Benchmarks: scripts that measure a running Warden, never timed tests."""
