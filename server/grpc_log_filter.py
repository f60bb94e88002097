"""Keep gRPC from logging a traceback per answer to a departed client.

gRPC logs a full traceback (ERROR) each time a handler answers a call whose
client already left (deadline passed, cancelled). Under overload that is
thousands of tracebacks costing CPU when it is scarcest; the outcome is
already counted as a late/cancelled request, so they are dropped. Installed
on import (server.app imports it).
"""

from __future__ import annotations

import logging


class PeerGoneFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return "ExecuteBatchError" not in record.getMessage()


PEER_GONE = PeerGoneFilter()
logging.getLogger("grpc._cython.cygrpc").addFilter(PEER_GONE)
