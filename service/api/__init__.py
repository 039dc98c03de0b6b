"""The REST API: FastAPI app, routes, schemas, authentication."""
