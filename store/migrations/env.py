"""Alembic's environment for the study store: upgrades run on the connection store.Store hands over
(`python -m store upgrade --store URL`, or Store.open, which upgrades to head)."""
from alembic import context
from sqlalchemy import create_engine

from store.tables import Base

config = context.config
connection = config.attributes.get("connection")
if connection is None:  # the alembic command line: the URL from -x url=... or alembic.ini's sqlalchemy.url
    url = context.get_x_argument(as_dictionary=True).get("url") or config.get_main_option("sqlalchemy.url")
    with create_engine(url).begin() as connection:
        context.configure(connection=connection, target_metadata=Base.metadata, render_as_batch=True)
        with context.begin_transaction():
            context.run_migrations()
else:
    context.configure(connection=connection, target_metadata=Base.metadata, render_as_batch=True)
    with context.begin_transaction():
        context.run_migrations()
