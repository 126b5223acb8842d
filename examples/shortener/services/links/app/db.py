"""Engine, sessions and start-up schema creation for the links database."""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator

from fastapi import Request
from sqlalchemy import create_engine, text
from sqlalchemy.exc import OperationalError
from sqlalchemy.orm import Session, sessionmaker

from app.models import Base

logger = logging.getLogger(__name__)


class Database:
    def __init__(self, url: str) -> None:
        self.engine = create_engine(url, pool_pre_ping=True, pool_size=5, max_overflow=5)
        self.sessions = sessionmaker(self.engine, expire_on_commit=False)

    def create_schema(self, timeout: float = 60.0, interval: float = 1.0) -> None:
        """Create the tables, retrying until the database answers or `timeout` seconds have passed."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                Base.metadata.create_all(self.engine)
                return
            except OperationalError as exc:
                if time.monotonic() >= deadline:
                    raise
                logger.info("database not ready (%s); retrying", str(exc.orig).strip())
                time.sleep(interval)

    def ping(self) -> None:
        with self.engine.connect() as connection:
            connection.execute(text("SELECT 1"))

    def dispose(self) -> None:
        self.engine.dispose()


def get_session(request: Request) -> Iterator[Session]:
    """FastAPI dependency: one session per request."""
    database: Database = request.app.state.database
    with database.sessions() as session:
        yield session
