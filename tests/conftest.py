"""
Shared pytest configuration: ``pytester`` for the tests of our own pytest plugin (tests/test_pytest_plugin.py).
"""

pytest_plugins = ["pytester"]
