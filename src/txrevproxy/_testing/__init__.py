"""
The machinery behind txrevproxy.testing: the in-memory network, recorders, proxies in memory and on threads.
"""
