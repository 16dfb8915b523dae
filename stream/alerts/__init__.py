"""Delivery of coverage alerts beyond Kafka: webhooks for duty sergeants."""
