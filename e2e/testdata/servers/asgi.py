"""An ASGI application for uvicorn, used by e2e/servers_test.go.

GET / answers 200 with the server's pid; GET /slow?ms=N answers the same
after N milliseconds (default 1000), so that a test can hold a request in
flight across a reload or a stop. It speaks the lifespan protocol, so that
uvicorn's default --lifespan auto logs no error.

    python3 -m uvicorn --app-dir e2e/testdata/servers --fd 3 asgi:app
"""

import asyncio
import os
from urllib.parse import parse_qs


async def app(scope, receive, send):
    if scope["type"] == "lifespan":
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await send({"type": "lifespan.shutdown.complete"})
                return
    if scope["type"] != "http":
        return
    if scope["path"] == "/slow":
        query = parse_qs(scope.get("query_string", b"").decode())
        await asyncio.sleep(int(query.get("ms", ["1000"])[0]) / 1000)
    body = b"%d\n" % os.getpid()
    await send({
        "type": "http.response.start",
        "status": 200,
        "headers": [
            (b"content-type", b"text/plain"),
            (b"content-length", str(len(body)).encode()),
        ],
    })
    await send({"type": "http.response.body", "body": body})
