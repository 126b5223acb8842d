"""Settings of the orders service, read once from the environment."""

from __future__ import annotations

import os

# The orders database as a plain postgresql://user:pass@host:port/db URL (the driver is chosen in app.main).
ORDERS_DSN = os.getenv("ORDERS_DSN", "postgresql://shop:shop-secret@localhost:5432/orders")
# The broker the outbox is published to.
RABBIT_URI = os.getenv("RABBIT_URI", "amqp://guest:guest@localhost:5672/%2F")
# Base URL of the inventory service's HTTP API.
INVENTORY_API = os.getenv("INVENTORY_API", "http://localhost:8081").rstrip("/")
# Topic exchange of the shop's events.
SHOP_EXCHANGE = os.getenv("SHOP_EXCHANGE", "shop.events")

LOG_LEVEL = os.getenv("LOG_LEVEL", "INFO")
INVENTORY_TIMEOUT_SECONDS = float(os.getenv("INVENTORY_TIMEOUT_SECONDS", "5"))
