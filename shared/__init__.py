"""What the ingest workers and the query API share: models, codecs, analysis, store, settings."""
