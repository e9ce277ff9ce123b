"""The REST API (`pip install 'memcluster[rest]'`): `app` builds the FastAPI app over a
memory surface, `schemas` are its bodies (its OpenAPI), `errors` maps memcluster's typed
errors to HTTP statuses, `server` runs it with uvicorn (`memcluster serve --http ...`).
Importing this package imports neither FastAPI nor uvicorn; its modules do."""
