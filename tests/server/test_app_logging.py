"""Log hygiene of the server process."""

from __future__ import annotations

import logging

import inferd.server.app  # noqa: F401  (installs the filter)


def test_answers_to_departed_clients_do_not_log_tracebacks(caplog) -> None:  # type: ignore[no-untyped-def]
    logger = logging.getLogger("grpc._cython.cygrpc")
    with caplog.at_level(logging.ERROR, logger="grpc._cython.cygrpc"):
        logger.error("ExecuteBatchError raised in core by servicer method [/x/ModelInfer]")
        logger.error("something else went wrong")
    messages = [r.getMessage() for r in caplog.records]
    assert messages == ["something else went wrong"]
