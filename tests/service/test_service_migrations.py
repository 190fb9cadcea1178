"""The Alembic migrations build exactly the schema the ORM models describe."""

from __future__ import annotations

from pathlib import Path

from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import inspect, text

from service.db import SQLITE_MMAP_BYTES, Base, create_db_engine
from service.migrate import upgrade_database


def test_migrations_match_the_models(database_url: str) -> None:
    engine = create_db_engine(database_url)
    try:
        upgrade_database(engine)
        upgrade_database(engine)  # idempotent
        assert {"galleries", "subjects", "faces", "alembic_version"} <= set(
            inspect(engine).get_table_names()
        )
        with engine.connect() as connection:
            diff = compare_metadata(MigrationContext.configure(connection), Base.metadata)
        assert diff == []
    finally:
        engine.dispose()


def test_sqlite_connections_get_their_pragmas(tmp_path: Path) -> None:
    engine = create_db_engine(f"sqlite:///{tmp_path / 'lrfr.sqlite3'}")
    with engine.connect() as connection:
        pragma = {name: connection.execute(text(f"PRAGMA {name}")).scalar()
                  for name in ("foreign_keys", "journal_mode", "busy_timeout", "mmap_size")}
    engine.dispose()
    assert pragma == {"foreign_keys": 1, "journal_mode": "wal", "busy_timeout": 30000,
                      "mmap_size": SQLITE_MMAP_BYTES}
