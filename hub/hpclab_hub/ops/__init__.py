"""What runs beside the servers: culling, metrics, event lines, the line of starts, the database schema."""
