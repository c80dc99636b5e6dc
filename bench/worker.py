"""``python -m bench.worker MODEL REPEATS``: the benchmark routine inside another runtime's environment."""

from bench.variants import worker_main

worker_main()
