"""
One exchange: a request relayed upstream and its response relayed back.
"""
