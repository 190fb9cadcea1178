"""Alembic environment: migrates the connection the service hands over, or the URL of
``LRFR_DATABASE_URL`` (falling back to the settings' default) when run from the CLI."""

from __future__ import annotations

from alembic import context
from sqlalchemy import engine_from_config, pool

from service.db import Base

config = context.config
target_metadata = Base.metadata


def _url() -> str:
    from service.settings import Settings  # only when run from the alembic CLI

    return Settings(dev_mode=True).resolved_database_url


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


if context.is_offline_mode():
    run_migrations_offline()
else:
    run_migrations_online()
