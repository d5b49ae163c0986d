"""Alembic environment: shares ztfcat's engine when called from code, else builds one from settings."""

from __future__ import annotations

from alembic import context

from ztfcat import settings
from ztfcat.store.db import make_engine
from ztfcat.store.tables import metadata

config = context.config


def run_migrations() -> None:
    engine = config.attributes.get("engine")
    if engine is None:
        engine = make_engine(settings.database_url())
    with engine.connect() as connection:
        context.configure(
            connection=connection,
            target_metadata=metadata,
            render_as_batch=connection.dialect.name == "sqlite",
        )
        with context.begin_transaction():
            context.run_migrations()
        connection.commit()


if context.is_offline_mode():
    raise SystemExit("ztfcat migrations run online only: `ztfcat db upgrade`")
run_migrations()
