"""inferd: a gRPC inference server speaking the Open Inference Protocol.

The repository's folders install under this one import root (``inferd.server``,
``inferd.engines``, ``inferd.clients``, ``inferd.protos``); see setup.py.
"""

__version__ = "0.1.0"
