"""The HyCAS Certify gateway: FastAPI routes, schemas, settings, image decoding, metrics, CLI."""
