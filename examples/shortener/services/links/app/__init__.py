"""The links service: short links, redirects, and the outbox that publishes their events."""
