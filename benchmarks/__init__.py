"""
The benchmark runner (``python benchmarks/run.py``) and its parts, a package so that the tests import the parsers
as ``benchmarks._h2load`` and the like. Never part of the test suite.
"""
