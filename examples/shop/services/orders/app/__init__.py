"""orders: takes orders, reserves their stock at inventory, publishes OrderPlaced / OrderCancelled."""
