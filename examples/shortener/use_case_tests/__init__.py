"""Use-case tests of the shortener, run against the in-memory mock or the real services."""
