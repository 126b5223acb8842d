"""HTTP API of the inventory service, and the lifetime of its event consumer."""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from typing import Annotated

from fastapi import Depends, FastAPI, HTTPException, Request, Response
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse
from sqlalchemy import create_engine, text
from sqlalchemy.exc import IntegrityError, OperationalError, SQLAlchemyError
from sqlalchemy.orm import Session, sessionmaker

from app import stock
from app.config import Config
from app.consumer import OrderEventsConsumer
from app.models import Base
from architecture.contracts.inventory import Reservation, StockLevel, StockUpdate

config = Config()
logging.basicConfig(level=config.log_level, format="%(asctime)s %(levelname)-7s %(name)s %(message)s")
logging.getLogger("pika").setLevel(logging.CRITICAL)  # its connection errors are logged below, once
log = logging.getLogger("inventory")

engine = create_engine(config.database_url, pool_pre_ping=True, pool_size=5)
Sessions = sessionmaker(engine, expire_on_commit=False)


def _create_schema(wait_seconds: float = 60.0) -> None:
    give_up = time.monotonic() + wait_seconds
    while True:
        try:
            Base.metadata.create_all(engine)
            return
        except OperationalError as exc:
            if time.monotonic() > give_up:
                raise
            log.info("inventory database not reachable yet: %s", str(exc.orig).strip())
            time.sleep(1.0)


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    await run_in_threadpool(_create_schema)
    consumer = OrderEventsConsumer(Sessions, config.amqp_url, config.exchange, config.queue)
    consumer.start()
    app.state.consumer = consumer
    try:
        yield
    finally:
        consumer.stop()
        engine.dispose()


app = FastAPI(title="inventory", lifespan=lifespan)


def session() -> Iterator[Session]:
    with Sessions() as s:
        yield s


DB = Annotated[Session, Depends(session)]


@app.get("/health")
def health(request: Request) -> JSONResponse:
    """503 until the consumer's queue is declared and bound and the database answers."""
    if not request.app.state.consumer.bound.is_set():
        return JSONResponse({"status": "waiting for the broker"}, status_code=503)
    try:
        with engine.connect() as conn:
            conn.execute(text("SELECT 1"))
    except SQLAlchemyError as exc:
        log.warning("health: database unreachable: %s", exc)
        return JSONResponse({"status": "database unreachable"}, status_code=503)
    return JSONResponse({"status": "ok"})


@app.put("/stock/{sku}")
def put_stock(sku: str, body: StockUpdate, db: DB) -> StockLevel:
    if body.sku != sku:
        raise HTTPException(400, f"body sku {body.sku!r} does not match the path's {sku!r}")
    try:
        result = stock.set_on_hand(db, sku, body.quantity)
    except stock.Refused as exc:
        raise HTTPException(409, str(exc)) from exc
    db.commit()
    return result


@app.get("/stock/{sku}")
def get_stock(sku: str, db: DB) -> StockLevel:
    try:
        return stock.stock_of(db, sku)
    except stock.UnknownSku as exc:
        raise HTTPException(404, f"unknown sku {sku!r}") from exc


@app.post("/reservations", status_code=201)
def post_reservation(body: Reservation, response: Response, db: DB) -> Reservation:
    try:
        result, created = stock.reserve(db, body)
        db.commit()
    except stock.UnknownSku as exc:
        raise HTTPException(404, f"unknown sku {body.sku!r}") from exc
    except stock.Refused as exc:
        raise HTTPException(409, str(exc)) from exc
    except IntegrityError as exc:  # the same order_id reserved concurrently
        raise HTTPException(409, f"order {body.order_id!r} is being reserved; retry") from exc
    if not created:
        response.status_code = 200
    return result


@app.delete("/reservations/{order_id}", status_code=204)
def delete_reservation(order_id: str, db: DB) -> None:
    try:
        stock.release(db, order_id)
    except stock.UnknownReservation as exc:
        raise HTTPException(404, f"no reservation for order {order_id!r}") from exc
    db.commit()
