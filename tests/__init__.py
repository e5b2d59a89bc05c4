"""
txrevproxy's tests: a package, so that pytest and ``python -m twisted.trial tests`` import the modules (and their
helpers, ``tests._harness`` and the like) by the same names.
"""
