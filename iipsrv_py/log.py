"""Logging set-up from LOGFILE and VERBOSITY.

VERBOSITY 0 is silent; 1 logs start-up and errors (including every 4xx with its reason);
2 adds one line per request with its timing; 3 and above add details.  LOGFILE is a path,
``syslog``, or unset for standard error.
"""

from __future__ import annotations

import logging
import logging.handlers
import os
import sys

from .settings import Settings

LEVELS = {0: logging.CRITICAL + 10, 1: logging.WARNING, 2: logging.INFO}


def setup(settings: Settings) -> None:
    level = LEVELS.get(settings.verbosity, logging.DEBUG)
    handler: logging.Handler
    if settings.logfile.lower() == "syslog":
        address = "/dev/log" if os.path.exists("/dev/log") else ("localhost", 514)
        handler = logging.handlers.SysLogHandler(address=address)
        handler.setFormatter(logging.Formatter("iipsrv-py[%(process)d]: %(levelname)s %(message)s"))
    else:
        handler = logging.FileHandler(settings.logfile) if settings.logfile else logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("%(asctime)s iipsrv-py[%(process)d] %(levelname)s %(message)s"))
    root = logging.getLogger("iipsrv_py")
    root.handlers[:] = [handler]
    root.setLevel(level)
    root.propagate = False
