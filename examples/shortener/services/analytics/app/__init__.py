"""The analytics service: visit statistics built from the links service's events."""
