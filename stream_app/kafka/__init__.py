"""Kafka and I/O: client options, the embedded broker, publishing events, reading assignments."""
