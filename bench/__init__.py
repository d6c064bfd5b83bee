"""Benchmarks; each bench_*.py has a main() and writes its results under bench/results/."""
