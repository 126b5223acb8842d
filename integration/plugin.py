"""pytest plugin (entry point `integration`): filled in by the harness work."""
