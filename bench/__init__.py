"""The benchmark of the whole Django request path (``bench/run.py``); see bench/README.md."""
