"""The evaluation's shell: ``hotspot ledger`` reads the dwell ledger off Kafka, ``hotspot
report`` writes the report files (the figures are ``geofences.evaluation``'s)."""
