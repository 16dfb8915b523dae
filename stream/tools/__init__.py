"""Tools around the worker: the demo, the patrol simulator, replay and the benchmark, and the
worker subprocesses they and the integration tests start (:mod:`.processes`)."""
