"""Configuration of the inventory service, from the environment."""

from __future__ import annotations

import os
from dataclasses import dataclass, field

from sqlalchemy.engine import URL


@dataclass(frozen=True)
class Config:
    db_host: str = field(default_factory=lambda: os.getenv("DB_HOST", "localhost"))
    db_port: int = field(default_factory=lambda: int(os.getenv("DB_PORT", "5432")))
    db_user: str = field(default_factory=lambda: os.getenv("DB_USER", "shop"))
    db_password: str = field(default_factory=lambda: os.getenv("DB_PASSWORD", "shop-secret"))
    db_name: str = field(default_factory=lambda: os.getenv("DB_NAME", "inventory"))
    amqp_url: str = field(
        default_factory=lambda: os.getenv("AMQP_URL", "amqp://guest:guest@localhost:5672/%2F")
    )
    queue: str = field(default_factory=lambda: os.getenv("ORDER_EVENTS_QUEUE", "inventory.order-events"))
    exchange: str = field(default_factory=lambda: os.getenv("SHOP_EXCHANGE", "shop.events"))
    log_level: str = field(default_factory=lambda: os.getenv("LOG_LEVEL", "INFO"))

    @property
    def database_url(self) -> URL:
        return URL.create(
            "postgresql+psycopg2",
            username=self.db_user,
            password=self.db_password,
            host=self.db_host,
            port=self.db_port,
            database=self.db_name,
        )
