"""The embedded Kafka-protocol broker (Tansu) and the work-arounds where it differs from Kafka."""
