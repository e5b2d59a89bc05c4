"""
The loopback integration tests: the real daemon as a child process, on 127.0.0.1.
"""
