"""The shortener's architecture: its services (services.yml) and their contracts."""
