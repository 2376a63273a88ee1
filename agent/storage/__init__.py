"""Local SQLite records: schema, connections, migrations, writes and queries."""
