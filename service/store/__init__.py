"""Storage: the engine, models, queries, bulk writes and ingestion statements."""
