"""Contracts between the shop's services: DTOs, events and one interface per service (pydantic only)."""
