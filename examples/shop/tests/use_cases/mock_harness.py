"""In-memory shop: both services behind their interfaces, joined by an in-memory broker.

The mock keeps the timing of the real system where a test could notice it: orders' outbox is
delivered to inventory only in wait_for_events_processed(), so a cancelled order's stock is back
only after that call, as with the real consumer.
"""

from __future__ import annotations

import uuid
from collections import defaultdict, deque
from collections.abc import Awaitable, Callable

from architecture.contracts import inventory as inventory_contract
from architecture.contracts.events import OrderCancelled, OrderEvent, OrderPlaced
from architecture.contracts.inventory import IInventoryService, Reservation, StockLevel, StockUpdate
from architecture.contracts.orders import IOrdersService, OrderResponse, PlaceOrder

ShopEvent = OrderPlaced | OrderCancelled
Handler = Callable[[ShopEvent], Awaitable[object]]


class InMemoryBroker:
    """A topic exchange with one queue per subscriber, fed from the publisher's outbox.

    `outbox` keeps every published event (the outbox_messages table); `pending` holds the
    deliveries not yet consumed. Unrouted messages are dropped, as RabbitMQ does.
    """

    def __init__(self) -> None:
        self.outbox: list[ShopEvent] = []
        self.pending: deque[ShopEvent] = deque()
        self._bindings: defaultdict[str, list[Handler]] = defaultdict(list)

    def bind(self, events: list[type[OrderEvent]], handler: Handler) -> None:
        for event_class in events:
            self._bindings[event_class.routing_key].append(handler)

    def publish(self, event: ShopEvent) -> None:
        self.outbox.append(event)
        self.pending.append(event)

    def redeliver(self, event: ShopEvent) -> None:
        self.pending.append(event)

    async def drain(self) -> None:
        while self.pending:
            event = self.pending.popleft()
            for handler in self._bindings[event.routing_key]:
                await handler(event)


class MockInventoryService(IInventoryService):
    def __init__(self) -> None:
        self._on_hand: dict[str, int] = {}
        self._reservations: dict[str, Reservation] = {}
        self._released: set[str] = set()
        self._inbox: set[str] = set()

    def _reserved(self, sku: str) -> int:
        return sum(
            r.quantity
            for order_id, r in self._reservations.items()
            if r.sku == sku and order_id not in self._released
        )

    def _level(self, sku: str) -> StockLevel:
        on_hand, reserved = self._on_hand[sku], self._reserved(sku)
        return StockLevel(sku=sku, on_hand=on_hand, reserved=reserved, available=on_hand - reserved)

    async def set_stock(self, update: StockUpdate) -> StockLevel:
        reserved = self._reserved(update.sku)
        if update.quantity < reserved:
            raise ValueError(f"cannot set {update.sku!r} to {update.quantity}: {reserved} are reserved")
        self._on_hand[update.sku] = update.quantity
        return self._level(update.sku)

    async def get_stock(self, sku: str) -> StockLevel:
        if sku not in self._on_hand:
            raise KeyError(f"unknown sku {sku!r}")
        return self._level(sku)

    async def reserve(self, reservation: Reservation) -> Reservation:
        existing = self._reservations.get(reservation.order_id)
        if existing is not None:
            if reservation.order_id in self._released:
                raise ValueError(f"the reservation of order {reservation.order_id!r} was released")
            if existing != reservation:
                raise ValueError(f"order {reservation.order_id!r} already holds another reservation")
            return existing
        level = await self.get_stock(reservation.sku)
        if level.available < reservation.quantity:
            raise ValueError(
                f"insufficient stock for {reservation.sku!r}: "
                f"{level.available} available, {reservation.quantity} requested"
            )
        self._reservations[reservation.order_id] = reservation
        return reservation

    async def release(self, order_id: str) -> None:
        if order_id not in self._reservations:
            raise KeyError(f"no reservation for order {order_id!r}")
        self._released.add(order_id)

    async def handle_order_cancelled(self, event: ShopEvent) -> bool:
        """The consumer: release once per event id (the inbox)."""
        if event.event_id in self._inbox:
            return False
        self._inbox.add(event.event_id)
        if event.order_id in self._reservations:
            await self.release(event.order_id)
        return True


class MockOrdersService(IOrdersService):
    def __init__(self, inventory: IInventoryService, broker: InMemoryBroker) -> None:
        self._inventory = inventory
        self._broker = broker
        self._orders: dict[str, OrderResponse] = {}  # insertion order = oldest first

    async def place_order(self, request: PlaceOrder) -> OrderResponse:
        order_id = str(uuid.uuid4())
        await self._inventory.reserve(
            Reservation(order_id=order_id, sku=request.sku, quantity=request.quantity)
        )
        order = OrderResponse(order_id=order_id, sku=request.sku, quantity=request.quantity, status="placed")
        self._orders[order_id] = order
        self._broker.publish(OrderPlaced(order_id=order_id, sku=order.sku, quantity=order.quantity))
        return order

    async def get_order(self, order_id: str) -> OrderResponse:
        try:
            return self._orders[order_id]
        except KeyError:
            raise KeyError(f"unknown order {order_id!r}") from None

    async def cancel_order(self, order_id: str) -> OrderResponse:
        order = await self.get_order(order_id)
        if order.status == "cancelled":
            raise ValueError(f"order {order_id!r} is already cancelled")
        order = order.model_copy(update={"status": "cancelled"})
        self._orders[order_id] = order
        self._broker.publish(OrderCancelled(order_id=order_id, sku=order.sku, quantity=order.quantity))
        return order

    async def list_orders(self) -> list[OrderResponse]:
        return list(self._orders.values())


class MockTestHarness:
    """ITestHarness over the in-memory services."""

    def __init__(self) -> None:
        self._wire()

    def _wire(self) -> None:
        self.broker = InMemoryBroker()
        self.inventory = MockInventoryService()
        self.orders = MockOrdersService(self.inventory, self.broker)
        self.broker.bind(inventory_contract.CONSUMES, self.inventory.handle_order_cancelled)

    async def set_stock(self, sku: str, quantity: int) -> StockLevel:
        return await self.inventory.set_stock(StockUpdate(sku=sku, quantity=quantity))

    async def get_stock(self, sku: str) -> StockLevel:
        return await self.inventory.get_stock(sku)

    async def place_order(self, sku: str, quantity: int) -> OrderResponse:
        return await self.orders.place_order(PlaceOrder(sku=sku, quantity=quantity))

    async def get_order(self, order_id: str) -> OrderResponse:
        return await self.orders.get_order(order_id)

    async def list_orders(self) -> list[OrderResponse]:
        return await self.orders.list_orders()

    async def cancel_order(self, order_id: str) -> OrderResponse:
        return await self.orders.cancel_order(order_id)

    async def get_published_events(self) -> list[ShopEvent]:
        return list(self.broker.outbox)

    async def wait_for_events_processed(self, timeout: float = 10.0) -> None:
        await self.broker.drain()

    async def redeliver_event(self, event: ShopEvent) -> None:
        self.broker.redeliver(event)

    async def reset(self) -> None:
        self._wire()
