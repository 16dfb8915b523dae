"""The stream processor: the Faust app, its intake, stages, checkpoint and topics."""
