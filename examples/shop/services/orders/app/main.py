"""HTTP API of the orders service."""

from __future__ import annotations

import logging
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from typing import Any

import httpx
from fastapi import FastAPI, HTTPException, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse
from sqlalchemy import URL, create_engine, insert, make_url, select, text, update
from sqlalchemy.exc import SQLAlchemyError

from app import settings
from app.outbox import OutboxRelay, add_to_outbox
from app.tables import create_tables, orders
from architecture.contracts.events import OrderCancelled, OrderPlaced
from architecture.contracts.orders import OrderResponse, PlaceOrder

logging.basicConfig(level=settings.LOG_LEVEL, format="%(asctime)s %(levelname)-7s %(name)s %(message)s")
logging.getLogger("pika").setLevel(logging.CRITICAL)  # its connection errors are logged below, once
log = logging.getLogger("orders")


def _engine_url(dsn: str) -> URL:
    """ORDERS_DSN is a plain libpq-style postgresql:// URL (psql takes it too); pin the psycopg2 driver,
    since SQLAlchemy 2.1 picks psycopg 3 for a bare postgresql:// scheme."""
    url = make_url(dsn)
    if url.drivername == "postgresql":
        url = url.set(drivername="postgresql+psycopg2")
    return url


engine = create_engine(_engine_url(settings.ORDERS_DSN), pool_pre_ping=True, pool_size=5)


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    await run_in_threadpool(create_tables, engine)
    relay = OutboxRelay(engine, settings.RABBIT_URI, settings.SHOP_EXCHANGE)
    relay.start()
    app.state.inventory = httpx.Client(
        base_url=settings.INVENTORY_API, timeout=settings.INVENTORY_TIMEOUT_SECONDS
    )
    log.info("orders up (inventory at %s, exchange %r)", settings.INVENTORY_API, settings.SHOP_EXCHANGE)
    try:
        yield
    finally:
        relay.stop()
        app.state.inventory.close()
        engine.dispose()


app = FastAPI(title="orders", lifespan=lifespan)


def _order(row: Any) -> OrderResponse:
    return OrderResponse.model_validate(dict(row))


def _inventory_detail(response: httpx.Response) -> str:
    try:
        detail = response.json().get("detail")
    except ValueError:
        detail = None
    return detail if isinstance(detail, str) else response.text


@app.get("/healthz")
def healthz() -> JSONResponse:
    try:
        with engine.connect() as conn:
            conn.execute(text("SELECT 1"))
    except SQLAlchemyError as exc:
        log.warning("healthz: database unreachable: %s", exc)
        return JSONResponse({"ok": False}, status_code=503)
    return JSONResponse({"ok": True})


@app.post("/orders", status_code=201)
def place_order(body: PlaceOrder, request: Request) -> OrderResponse:
    inventory: httpx.Client = request.app.state.inventory
    order_id = str(uuid.uuid4())
    reservation = {"order_id": order_id, "sku": body.sku, "quantity": body.quantity}
    try:
        answer = inventory.post("/reservations", json=reservation)
    except httpx.HTTPError as exc:
        log.warning("inventory unreachable: %r", exc)
        raise HTTPException(503, "inventory is unavailable") from exc
    if answer.status_code == 404:
        raise HTTPException(404, f"unknown sku {body.sku!r}")
    if answer.status_code == 409:
        raise HTTPException(409, f"cannot place the order: {_inventory_detail(answer)}")
    if answer.status_code not in (200, 201):
        log.error("inventory answered %s: %s", answer.status_code, answer.text)
        raise HTTPException(502, "inventory refused the reservation")

    now = datetime.now(UTC)
    placed = OrderPlaced(order_id=order_id, sku=body.sku, quantity=body.quantity, occurred_at=now)
    try:
        with engine.begin() as conn:
            conn.execute(
                insert(orders).values(
                    order_id=order_id, sku=body.sku, quantity=body.quantity, status="placed", created_at=now
                )
            )
            add_to_outbox(conn, placed)
    except SQLAlchemyError as exc:
        log.error("could not store order %s (%s); releasing its reservation", order_id, exc)
        try:
            inventory.delete(f"/reservations/{order_id}")
        except httpx.HTTPError:
            log.exception("could not release the reservation of order %s", order_id)
        raise HTTPException(503, "the order could not be stored") from exc
    return OrderResponse(order_id=order_id, sku=body.sku, quantity=body.quantity, status="placed")


@app.get("/orders")
def list_orders() -> list[OrderResponse]:
    with engine.connect() as conn:
        rows = conn.execute(select(orders).order_by(orders.c.created_at, orders.c.order_id)).mappings()
        return [_order(row) for row in rows]


@app.get("/orders/{order_id}")
def get_order(order_id: str) -> OrderResponse:
    with engine.connect() as conn:
        row = conn.execute(select(orders).where(orders.c.order_id == order_id)).mappings().first()
    if row is None:
        raise HTTPException(404, f"unknown order {order_id!r}")
    return _order(row)


@app.post("/orders/{order_id}/cancel")
def cancel_order(order_id: str) -> OrderResponse:
    with engine.begin() as conn:
        row = (
            conn.execute(select(orders).where(orders.c.order_id == order_id).with_for_update())
            .mappings()
            .first()
        )
        if row is None:
            raise HTTPException(404, f"unknown order {order_id!r}")
        if row["status"] == "cancelled":
            raise HTTPException(409, f"order {order_id!r} is already cancelled")
        now = datetime.now(UTC)
        conn.execute(
            update(orders).where(orders.c.order_id == order_id).values(status="cancelled", cancelled_at=now)
        )
        add_to_outbox(
            conn,
            OrderCancelled(order_id=order_id, sku=row["sku"], quantity=row["quantity"], occurred_at=now),
        )
    return OrderResponse(order_id=order_id, sku=row["sku"], quantity=row["quantity"], status="cancelled")
