"""Benchmark scripts: each prints a table stamped with the machine, and writes a results page with ``--write-docs``.

Run one as a script (``python benchmarks/speed.py``) or as a module from the repository root (``python -m
benchmarks.speed``); tests import them as ``benchmarks.NAME`` (pyproject.toml puts the repository root on pytest's
path). No script edits ``sys.path``: a script's own directory is on it when run as a script.
"""
