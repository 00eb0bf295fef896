"""prodcat's benchmark harness: model-only ceiling, end to end, naive baseline, latency.

Not tests: it measures speed on the machine it runs on and writes ``bench/results/*.json``
and its sections of ``docs/benchmarks.md``. Run it with ``prodcat bench`` or
``python -m bench`` (``--help`` lists the options). Every comparison is a ratio of figures
measured side by side in one run, because absolute times on a shared machine drift.
"""
