"""Benchmarks behind `mbridge bench NAME`: each module has `main(argv) -> int`."""
