"""The analytics service: statistics API and the event consumer's lifetime."""

from __future__ import annotations

import functools
import logging
import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, FastAPI, HTTPException, Query, Request, status
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse
from sqlalchemy import select
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session

from app.db import Database, get_session
from app.events import EventConsumer, process_event
from app.models import LinkStatsRecord
from architecture.contracts.analytics import DEFAULT_TOP_LIMIT, EVENTS_CONSUMED, MAX_TOP_LIMIT, LinkStats

logging.basicConfig(
    level=os.environ.get("LOG_LEVEL", "INFO"),
    format="%(asctime)s %(levelname)s %(name)s: %(message)s",
)
logging.getLogger("pika").setLevel(logging.WARNING)
logger = logging.getLogger("analytics")


@dataclass(frozen=True)
class Settings:
    database_url: str
    broker_url: str
    exchange: str
    queue: str

    @classmethod
    def from_env(cls) -> Settings:
        service = os.environ.get("SERVICE_NAME", "analytics")
        return cls(
            database_url=os.environ["DATABASE_URL"],
            broker_url=os.environ["BROKER_URL"],
            exchange=os.environ.get("EVENT_EXCHANGE", "events"),
            queue=os.environ.get("EVENT_QUEUE", f"{service}.events"),
        )


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    settings = Settings.from_env()
    database = Database(settings.database_url)
    await run_in_threadpool(database.create_schema)
    consumer = EventConsumer(
        settings.broker_url,
        settings.exchange,
        settings.queue,
        EVENTS_CONSUMED,
        functools.partial(process_event, database.sessions),
    )
    consumer.start()
    app.state.database = database
    app.state.consumer = consumer
    try:
        yield
    finally:
        consumer.stop()
        database.dispose()


app = FastAPI(title="analytics", lifespan=lifespan)
SessionDep = Annotated[Session, Depends(get_session)]


@app.get("/health")
def health(request: Request) -> JSONResponse:
    """200 once the database answers and the queue is bound (so no routed event can be missed)."""
    if not request.app.state.consumer.ready.is_set():
        return JSONResponse({"status": "starting"}, status_code=status.HTTP_503_SERVICE_UNAVAILABLE)
    try:
        request.app.state.database.ping()
    except SQLAlchemyError as exc:
        logger.warning("health check failed: %s", exc)
        return JSONResponse({"status": "unavailable"}, status_code=status.HTTP_503_SERVICE_UNAVAILABLE)
    return JSONResponse({"status": "ok"})


@app.get("/stats")
def top_links(
    session: SessionDep,
    limit: Annotated[int, Query(ge=1, le=MAX_TOP_LIMIT)] = DEFAULT_TOP_LIMIT,
) -> list[LinkStats]:
    rows = session.scalars(
        select(LinkStatsRecord)
        .where(LinkStatsRecord.deleted.is_(False))
        .order_by(LinkStatsRecord.visits.desc(), LinkStatsRecord.code)
        .limit(limit)
    )
    return [LinkStats.model_validate(row) for row in rows]


@app.get("/stats/{code}")
def get_stats(code: str, session: SessionDep) -> LinkStats:
    stats = session.get(LinkStatsRecord, code)
    if stats is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"no statistics for code {code!r}")
    return LinkStats.model_validate(stats)
