"""
Twisted plumbing both sides stand on: writing to a transport, addresses, producers, deadlines, the byte tunnel.
"""
