"""The HTTP API (FastAPI): app factory, auth, routes."""
