"""inventory: stock levels and reservations; releases a cancelled order's reservation."""
