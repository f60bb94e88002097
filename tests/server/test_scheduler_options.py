"""Batching options read from config parameters."""

from __future__ import annotations

from pathlib import Path

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


def test_triton_options_each_policy_ignores_are_named_with_why() -> None:
    from google.protobuf import text_format

    from inferd.protos import model_config_pb2
    from inferd.server.scheduler.options import ignored_triton_options, options_from_config

    text = (
        "max_batch_size: 8 dynamic_batching { preferred_batch_size: [4, 8] "
        "max_queue_delay_microseconds: 500 }"
    )
    adaptive = options_from_config(text_format.Parse(text, model_config_pb2.ModelConfig()))
    assert adaptive.policy == "adaptive" and adaptive.max_queue_delay_s == 0.0005
    (only,) = ignored_triton_options(adaptive)  # the delay is honoured, the sizes are not
    assert only.startswith("preferred_batch_size [4, 8]") and "deadlines" in only
    static = text + ' parameters { key: "batching_policy" value { string_value: "static" } }'
    parsed = options_from_config(text_format.Parse(static, model_config_pb2.ModelConfig()))
    assert ignored_triton_options(parsed) == []
    alone = text + ' parameters { key: "batching_policy" value { string_value: "none" } }'
    parsed = options_from_config(text_format.Parse(alone, model_config_pb2.ModelConfig()))
    assert [o.split()[0] for o in ignored_triton_options(parsed)] == [
        "preferred_batch_size",
        "max_queue_delay_microseconds",
    ]
    plain = options_from_config(
        text_format.Parse("max_batch_size: 8", model_config_pb2.ModelConfig())
    )
    assert ignored_triton_options(plain) == []


def test_a_model_load_logs_the_ignored_triton_options_once_per_model(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    import asyncio

    from onnx import TensorProto, helper, save

    from inferd.server.models import ModelManager
    from inferd.server.repository import ModelRepository

    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [-1, 3])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [-1, 3])
    graph = helper.make_graph([helper.make_node("Identity", ["x"], ["y"])], "g", [x], [y])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    (tmp_path / "m" / "1").mkdir(parents=True)
    save(model, str(tmp_path / "m" / "1" / "model.onnx"))
    (tmp_path / "m" / "config.pbtxt").write_text(
        'name: "m" platform: "onnxruntime_onnx" max_batch_size: 4\n'
        "dynamic_batching { preferred_batch_size: [2, 4] max_queue_delay_microseconds: 100 }\n"
        'parameters { key: "warmup_rounds" value { string_value: "1" } }\n'
    )
    manager = ModelManager(ModelRepository(tmp_path))

    async def load_twice() -> None:
        await manager.load("m")
        (tmp_path / "m" / "config.pbtxt").write_text(
            (tmp_path / "m" / "config.pbtxt").read_text().replace("100", "200")
        )
        await manager.load("m")  # a changed config: the version reloads
        await manager.unload("m")

    with caplog.at_level("INFO", logger="inferd.models"):
        asyncio.run(load_twice())
    lines = [r.getMessage() for r in caplog.records if "ignores" in r.getMessage()]
    assert lines == [
        "model 'm' (batching_policy adaptive) ignores preferred_batch_size [2, 4] "
        "(the adaptive policy sizes batches by deadlines and the arrival rate)"
    ]
    assert sum("warmed up" in r.getMessage() for r in caplog.records) == 2
