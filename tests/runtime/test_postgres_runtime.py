"""A sync server on the PostgreSQL store, with our client: documents survive a restart."""

from __future__ import annotations

from autosync_jupyter import SyncServer, connect, fetch
from autosync_jupyter.storage import PostgresStore


async def test_documents_survive_a_restart_on_postgres(postgres_url: str) -> None:
    """Changes a client makes are in the database after a restart, served to a new client."""
    async with SyncServer(port=0, data_dir=None, store=PostgresStore(postgres_url)) as server:
        assert server.storage_id is not None
        storage_id = server.storage_id
        async with connect(server.url) as conn:
            handle = await conn.create({"title": "on postgres", "n": 1})
            doc_id = handle.document_id
            with handle.change() as d:
                d["n"] = 2
            await handle.flush()
        await server.change_document(doc_id, lambda d: d.__setitem__("by", "server"))
    async with SyncServer(port=0, data_dir=None, store=PostgresStore(postgres_url)) as server:
        assert server.storage_id == storage_id
        copy = await fetch(server.url, doc_id)
        assert copy.to_py() == {"title": "on postgres", "n": 2, "by": "server"}


async def test_the_server_says_where_its_documents_are(postgres_url: str) -> None:
    """Logs, repr and %autosync status name the database (no password), not "memory"."""
    user, rest = postgres_url.split("@", 1)
    url = f"{user}:secret-pw@{rest}"  # trust authentication ignores it
    async with SyncServer(port=0, data_dir=None, store=PostgresStore(url)) as server:
        assert server.data_location.startswith("postgresql://")
        assert "secret-pw" not in server.data_location
        assert f"data: {server.data_location}" in repr(server)
    async with SyncServer(port=0, data_dir=None) as server:
        assert server.data_location == "memory"
