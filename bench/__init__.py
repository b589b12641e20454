"""Benchmarks (not tests): `python -m bench NAME` runs bench/NAME.py."""
