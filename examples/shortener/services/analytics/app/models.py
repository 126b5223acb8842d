"""Tables of the analytics database."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import Boolean, DateTime, Integer, String, Text
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column


class Base(DeclarativeBase):
    pass


class LinkStatsRecord(Base):
    __tablename__ = "link_stats"

    code: Mapped[str] = mapped_column(String(32), primary_key=True)
    url: Mapped[str] = mapped_column(Text)
    visits: Mapped[int] = mapped_column(Integer, default=0, index=True)
    created_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), default=None)
    deleted: Mapped[bool] = mapped_column(Boolean, default=False)


class ProcessedEvent(Base):
    """One row per consumed event: a redelivered event finds its id here and is skipped."""

    __tablename__ = "processed_events"

    event_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    event_type: Mapped[str] = mapped_column(String(100))
    processed_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
