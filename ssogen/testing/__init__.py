"""Helpers for tests and benchmarks: tiny offline models and synthetic output folders (no download)."""
