"""Benchmarks and calibration (`make bench`): accuracy, thresholds and latency, written into docs/."""
