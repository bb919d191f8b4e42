"""crumb inside PostgreSQL: the verifier as SQL functions, for row-level security.

    crumb pg install --dsn DSN [--hop storage]     # schema crumb (schema.sql), as a superuser
    crumb pg keys sync --dsn DSN --issuer URL      # trusted keys from the issuer's GET /keys

- ``schema.sql``: the tables (settings, keys, spent) and the SQL functions;
- ``backend``: what the functions run inside the server (PL/Python): crumb's own Verifier;
- ``install``: applies the schema and records where the server's Python finds crumb;
- ``keys``: fills crumb.keys; ``cli``: the `crumb pg` commands.

docs/postgres.md is the guide. Only ``backend`` is imported inside the server,
and it needs the token core alone; the rest needs the ``pg`` extra
(``pip install 'crumb-auth[pg]'``: psycopg, httpx).
"""
