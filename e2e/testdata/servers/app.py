"""A WSGI application for gunicorn, used by e2e/servers_test.go.

GET / answers 200 with the pid of the worker that served it; GET
/slow?ms=N answers the same after N milliseconds (default 1000), so that a
test can hold a request in flight across a reload or a stop.

    gunicorn --chdir e2e/testdata/servers --workers 2 app:app
"""

import os
import time
from urllib.parse import parse_qs


def app(environ, start_response):
    if environ.get("PATH_INFO") == "/slow":
        query = parse_qs(environ.get("QUERY_STRING", ""))
        time.sleep(int(query.get("ms", ["1000"])[0]) / 1000)
    body = b"%d\n" % os.getpid()
    start_response("200 OK", [
        ("Content-Type", "text/plain"),
        ("Content-Length", str(len(body))),
    ])
    return [body]
