"""The links service: HTTP API, redirects, and the outbox publisher's lifetime."""

from __future__ import annotations

import logging
import os
import secrets
import string
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Annotated

from fastapi import Depends, FastAPI, HTTPException, Request, Response, status
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse, RedirectResponse
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError, SQLAlchemyError
from sqlalchemy.orm import Session

from app.db import Database, get_session
from app.events import OutboxPublisher, record_event
from app.models import Link
from architecture.contracts.events import LinkCreated, LinkDeleted, LinkVisited
from architecture.contracts.links import CreateLinkRequest, LinkResponse

logging.basicConfig(
    level=os.environ.get("LOG_LEVEL", "INFO"),
    format="%(asctime)s %(levelname)s %(name)s: %(message)s",
)
logging.getLogger("pika").setLevel(logging.WARNING)
logger = logging.getLogger("links")

CODE_ALPHABET = string.ascii_letters + string.digits
GENERATED_CODE_LENGTH = 7
GENERATE_ATTEMPTS = 5


@dataclass(frozen=True)
class Settings:
    database_url: str
    broker_url: str
    exchange: str

    @classmethod
    def from_env(cls) -> Settings:
        return cls(
            database_url=os.environ["DATABASE_URL"],
            broker_url=os.environ["BROKER_URL"],
            exchange=os.environ.get("EVENT_EXCHANGE", "events"),
        )


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    settings = Settings.from_env()
    database = Database(settings.database_url)
    await run_in_threadpool(database.create_schema)
    publisher = OutboxPublisher(database.sessions, settings.broker_url, settings.exchange)
    publisher.start()
    app.state.database = database
    try:
        yield
    finally:
        publisher.stop()
        database.dispose()


app = FastAPI(title="links", lifespan=lifespan)
SessionDep = Annotated[Session, Depends(get_session)]


def _not_found(code: str) -> HTTPException:
    return HTTPException(status.HTTP_404_NOT_FOUND, f"no link with code {code!r}")


def _generate_code() -> str:
    return "".join(secrets.choice(CODE_ALPHABET) for _ in range(GENERATED_CODE_LENGTH))


# /health is registered before the catch-all redirect GET /{code}, which would otherwise shadow it.
@app.get("/health")
def health(request: Request) -> JSONResponse:
    try:
        request.app.state.database.ping()
    except SQLAlchemyError as exc:
        logger.warning("health check failed: %s", exc)
        return JSONResponse({"status": "unavailable"}, status_code=status.HTTP_503_SERVICE_UNAVAILABLE)
    return JSONResponse({"status": "ok"})


def _insert_link(session: Session, code: str, url: str) -> Link | None:
    """Insert a link and its LinkCreated event; None when the code is already taken."""
    now = datetime.now(UTC)
    link = Link(code=code, url=url, created_at=now)
    session.add(link)
    record_event(session, LinkCreated(code=code, url=url, occurred_at=now))
    try:
        session.commit()
    except IntegrityError:
        session.rollback()
        return None
    return link


@app.post("/links", status_code=status.HTTP_201_CREATED)
def create_link(body: CreateLinkRequest, response: Response, session: SessionDep) -> LinkResponse:
    if body.code is None:
        for _ in range(GENERATE_ATTEMPTS):
            link = _insert_link(session, _generate_code(), body.url)
            if link is not None:
                return LinkResponse.model_validate(link)
        raise HTTPException(status.HTTP_503_SERVICE_UNAVAILABLE, "could not generate a free code")

    existing = session.get(Link, body.code)
    if existing is None:
        link = _insert_link(session, body.code, body.url)
        if link is not None:
            return LinkResponse.model_validate(link)
        existing = session.get(Link, body.code)  # created concurrently
        if existing is None:
            raise HTTPException(status.HTTP_409_CONFLICT, f"code {body.code!r} is being changed; retry")
    if existing.url != body.url:
        raise HTTPException(status.HTTP_409_CONFLICT, f"code {body.code!r} already links to another url")
    response.status_code = status.HTTP_200_OK
    return LinkResponse.model_validate(existing)


@app.get("/links")
def list_links(session: SessionDep) -> list[LinkResponse]:
    links = session.scalars(select(Link).order_by(Link.created_at, Link.code))
    return [LinkResponse.model_validate(link) for link in links]


@app.get("/links/{code}")
def get_link(code: str, session: SessionDep) -> LinkResponse:
    link = session.get(Link, code)
    if link is None:
        raise _not_found(code)
    return LinkResponse.model_validate(link)


@app.delete("/links/{code}", status_code=status.HTTP_204_NO_CONTENT)
def delete_link(code: str, session: SessionDep) -> None:
    link = session.get(Link, code, with_for_update=True)
    if link is None:
        raise _not_found(code)
    session.delete(link)
    record_event(session, LinkDeleted(code=link.code, url=link.url))
    session.commit()


# The catch-all: must stay the last route.
@app.get("/{code}")
def visit(code: str, session: SessionDep) -> RedirectResponse:
    link = session.get(Link, code)
    if link is None:
        raise _not_found(code)
    record_event(session, LinkVisited(code=link.code, url=link.url))
    session.commit()
    return RedirectResponse(link.url, status_code=status.HTTP_307_TEMPORARY_REDIRECT)
