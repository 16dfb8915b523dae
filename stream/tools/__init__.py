"""Tools around the worker: the demo, the patrol simulator, replay and the benchmark."""
