"""The ingest worker: Kafka span events in, stored and finalized traces out."""
