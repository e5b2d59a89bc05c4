"""
Pure HTTP/1.1 rules: head parsing, headers, validation, framing, the proxy's own responses, networks. No Twisted import.
"""
