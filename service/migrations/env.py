"""Alembic environment: migrates the connection the service hands over, or, from the
alembic CLI, ``LRFR_DATABASE_URL`` (default: SQLite in ``LRFR_DATA_DIR``)."""

from __future__ import annotations

import os
from logging.config import fileConfig
from pathlib import Path

from alembic import context
from sqlalchemy import engine_from_config, pool

from service.db import Base
from service.settings import default_database_url

config = context.config
target_metadata = Base.metadata


def _url() -> str:
    """``LRFR_DATABASE_URL``, else the service's default (SQLite in ``LRFR_DATA_DIR``)."""
    url = os.environ.get("LRFR_DATABASE_URL")
    if url:
        return url
    return default_database_url(Path(os.environ.get("LRFR_DATA_DIR") or "data"))


def run_migrations_offline() -> None:
    context.configure(
        url=config.get_main_option("sqlalchemy.url") or _url(),
        target_metadata=target_metadata,
        literal_binds=True,
        render_as_batch=True,
    )
    with context.begin_transaction():
        context.run_migrations()


def run_migrations_online() -> None:
    connection = config.attributes.get("connection")
    if connection is not None:
        context.configure(
            connection=connection, target_metadata=target_metadata, render_as_batch=True
        )
        with context.begin_transaction():
            context.run_migrations()
        return
    section = config.get_section(config.config_ini_section, {})
    section["sqlalchemy.url"] = config.get_main_option("sqlalchemy.url") or _url()
    engine = engine_from_config(section, prefix="sqlalchemy.", poolclass=pool.NullPool)
    with engine.connect() as conn:
        context.configure(connection=conn, target_metadata=target_metadata, render_as_batch=True)
        with context.begin_transaction():
            context.run_migrations()


if config.attributes.get("connection") is None and config.config_file_name:
    fileConfig(config.config_file_name, disable_existing_loggers=False)  # the alembic CLI

if context.is_offline_mode():
    run_migrations_offline()
else:
    run_migrations_online()
