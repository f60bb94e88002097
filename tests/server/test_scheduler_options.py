"""Batching options read from config parameters."""

from __future__ import annotations

import pytest


def test_inline_option_is_read_from_config_parameters() -> None:
    from inferd.protos import model_config_pb2
    from inferd.server.scheduler.options import options_from_config

    config = model_config_pb2.ModelConfig(max_batch_size=8)
    config.dynamic_batching.SetInParent()
    config.parameters["inline_max_us"].string_value = "300"
    assert options_from_config(config).inline_max_s == pytest.approx(0.0003)
    config.parameters["inline_max_us"].string_value = "lots"
    with pytest.raises(Exception, match="inline_max_us"):
        options_from_config(config)


def test_reply_allowance_is_read_from_config_parameters() -> None:
    from inferd.protos import model_config_pb2
    from inferd.server.scheduler.options import options_from_config

    config = model_config_pb2.ModelConfig(max_batch_size=8)
    config.dynamic_batching.SetInParent()
    assert options_from_config(config).reply_allowance_s == pytest.approx(0.0005)
    config.parameters["reply_allowance_us"].string_value = "0"
    assert options_from_config(config).reply_allowance_s == 0.0
    config.parameters["reply_allowance_us"].string_value = "-5"
    with pytest.raises(Exception, match="reply_allowance_us"):
        options_from_config(config)
