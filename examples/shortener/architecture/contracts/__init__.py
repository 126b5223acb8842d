"""Service contracts: DTOs, events and one abstract interface per service. Needs only pydantic."""
