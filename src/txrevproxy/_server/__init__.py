"""
The client side: the HTTP/1.1 channel and request, HTTP/2, request bodies, the connection gate, the access log.
"""
