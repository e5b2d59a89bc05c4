"""
TLS on both sides: listeners with SNI, verified client connections to upstreams, PEM files.
"""
