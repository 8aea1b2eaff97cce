"""A broken build for gunicorn, used by e2e/servers_test.go: importing it
fails, as a deploy with a syntax error or a missing module would."""

raise ImportError("a broken build: this module does not import")
