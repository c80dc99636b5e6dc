"""Benchmarks: accuracy, latency, throughput, size, memory and start-up of every variant, side by side."""
