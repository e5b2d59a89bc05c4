"""
The twistd plugin's options and service: ``twistd -n txrevproxy --listen ... --upstream ...``.

Option errors and listening failures end the process with a one-line message on stderr and exit status 2 (bad
options) or 1 (cannot listen), never a traceback.
"""

from txrevproxy._daemon.options import Options
from txrevproxy._daemon.service import makeService

__all__ = ["Options", "makeService"]
