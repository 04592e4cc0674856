"""Benchmark measurement: pure arithmetic (stats, baselines, plan) and the runners."""
