"""
The upstream side: the strict HTTP/1.1 client protocol and the keep-alive connection pool.
"""
