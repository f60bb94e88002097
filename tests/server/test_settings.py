"""Settings: every server option is a flag and an ``INFERD_*`` variable,
generated from ``ServerConfig``; a flag beats the variable; bad values are
refused with one line naming how they were given; old flag spellings work
and warn."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from inferd.clients import InferenceClient
from inferd.clients.errors import InferenceServerError
from inferd.server.app import InferdServer, StartupError
from inferd.server.settings import (
    SETTINGS,
    ServerConfig,
    Setting,
    SettingsError,
    parse_serve_settings,
)
from inferd.server.settings.options import BadValue, parse_size

ROOT = Path(__file__).resolve().parents[2]


def _sample(setting: Setting) -> tuple[str, Any]:
    """A text for the setting other than its default, and the value it reads as."""
    if setting.kind is bool:
        return ("false", False) if setting.serve_default else ("true", True)
    if setting.option.choices:
        text = next(c for c in setting.option.choices if c != setting.serve_default)
        return text, text
    if setting.kind is tuple:
        return "a,b", ("a", "b")
    if setting.is_size:
        return "2MiB", 2 << 20
    if setting.kind is int:
        return "7", 7
    if setting.kind is float:
        return "0.25", 0.25
    if setting.kind is Path:
        return "/srv/x", Path("/srv/x")
    return "abc", "abc"


def _flag_args(setting: Setting, text: str) -> list[str]:
    if setting.kind is bool:
        return [setting.flag if text == "true" else "--no-" + setting.flag[2:]]
    if setting.kind is tuple:
        return [arg for part in text.split(",") for arg in (setting.flag, part)]
    return [setting.flag, text]


def test_every_setting_has_a_flag_and_a_variable_named_after_it() -> None:
    assert len(SETTINGS) > 40
    names = [s.name for s in SETTINGS]
    assert len(set(names)) == len(names)
    for setting in SETTINGS:
        assert setting.env == "INFERD_" + setting.name.upper()
        if setting.name != "load_models":  # the repeatable --load-model NAME
            assert setting.flag == "--" + setting.name.replace("_", "-")
    assert "serve_metrics" not in names  # wiring between supervisor and workers


@pytest.mark.parametrize("setting", SETTINGS, ids=lambda s: s.name)
def test_every_setting_is_settable_by_flag_and_by_variable(setting: Setting) -> None:
    text, value = _sample(setting)
    by_flag = parse_serve_settings(_flag_args(setting, text))
    by_env = parse_serve_settings([], {setting.env: text})
    assert by_flag.values[setting.name] == value
    assert by_env.values[setting.name] == value
    assert by_flag.sources[setting.name] == "flag"
    assert by_env.sources[setting.name] == "env"
    assert value != setting.serve_default


def test_help_names_every_variable() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "inferd", "serve", "--help"],
        capture_output=True, text=True, timeout=60, cwd=ROOT,
    )  # fmt: skip
    assert done.returncode == 0
    flat = " ".join(done.stdout.split())
    for setting in SETTINGS:
        assert setting.env in flat.replace("- ", "-"), setting.env


def test_variables_set_each_kind_of_value(tmp_path: Path) -> None:
    environ = {
        "INFERD_MODEL_REPOSITORY": str(tmp_path),
        "INFERD_LOG_REQUESTS": "yes",
        "INFERD_REFLECTION": "1",
        "INFERD_GC_FREEZE": "off",
        "INFERD_GRPC_PORT": "0",
        "INFERD_MAX_METADATA_BYTES": "8 KiB",
        "INFERD_GRACE_S": "2.5",
        "INFERD_STATE_DIR": str(tmp_path / "state"),
        "INFERD_MODEL_CONTROL_MODE": "explicit",
        "INFERD_LOAD_MODELS": " plus, digits_mlp ,",
        "INFERD_MAX_CONCURRENT_RPCS": "0",
        "INFERD_HOST": "",  # empty: unset
    }
    config = parse_serve_settings([], environ).to_config()
    assert config.model_repository == tmp_path
    assert config.log_requests is True and config.reflection is True
    assert config.gc_freeze is False
    assert config.grpc_port == 0
    assert config.max_metadata_bytes == 8192
    assert config.grace_s == 2.5
    assert config.state_dir == tmp_path / "state"
    assert config.load_models == ("plus", "digits_mlp")
    assert config.max_concurrent_rpcs is None  # 0: no limit
    assert config.host == "127.0.0.1"


def test_a_flag_beats_the_variable() -> None:
    environ = {
        "INFERD_GRPC_PORT": "1234",
        "INFERD_LOG_REQUESTS": "true",
        "INFERD_LOAD_MODELS": "a,b",
        "INFERD_GRACE_S": "9",
    }
    args = ["--grpc-port", "5678", "--no-log-requests", "--load-model", "c"]
    settings = parse_serve_settings(args, environ)
    assert settings.values["grpc_port"] == 5678
    assert settings.values["log_requests"] is False
    assert settings.values["load_models"] == ("c",)
    assert settings.values["grace_s"] == 9.0  # no flag: the variable


def test_defaults_of_the_command_and_of_embedding_differ_only_where_meant() -> None:
    differ = {s.name for s in SETTINGS if s.serve_default != s.default}
    assert differ == {"allow_http", "gc_freeze", "gil_switch_interval_s"}


@pytest.mark.parametrize(
    ("name", "text", "message"),
    [
        ("INFERD_GRPC_PORT", "abc", "INFERD_GRPC_PORT: 'abc' is not an integer"),
        ("INFERD_LOG_REQUESTS", "maybe", "INFERD_LOG_REQUESTS: 'maybe' is not a boolean"),
        ("INFERD_GRACE_S", "soon", "INFERD_GRACE_S: 'soon' is not a number"),
        ("INFERD_MAX_MESSAGE_BYTES", "64MB", "INFERD_MAX_MESSAGE_BYTES: '64MB' is not a size"),
        (
            "INFERD_MODEL_CONTROL_MODE",
            "sometimes",
            "INFERD_MODEL_CONTROL_MODE: 'sometimes' is not one of none, poll, explicit",
        ),
    ],
)
def test_a_bad_variable_is_named(name: str, text: str, message: str) -> None:
    with pytest.raises(SettingsError) as info:
        parse_serve_settings([], {name: text})
    assert str(info.value).startswith(message)


def test_a_bad_variable_exits_2_with_one_line(tmp_path: Path) -> None:
    env = {**os.environ, "INFERD_GRPC_PORT": "abc"}
    done = subprocess.run(
        [sys.executable, "-m", "inferd", "serve", "--model-repository", str(tmp_path)],
        capture_output=True, text=True, timeout=60, cwd=ROOT, env=env,
    )  # fmt: skip
    assert done.returncode == 2
    assert done.stderr.strip() == "error: INFERD_GRPC_PORT: 'abc' is not an integer"


def _refusal(args: list[str], environ: dict[str, str]) -> str:
    with pytest.raises(SettingsError) as info:
        parse_serve_settings(["--model-repository", "/m", *args], environ).to_config()
    return str(info.value)


def test_a_refused_value_is_named_as_it_was_given() -> None:
    by_env = _refusal([], {"INFERD_METRICS_PORT": "70000"})
    assert by_env == "INFERD_METRICS_PORT 70000 is not a port number"
    by_flag = _refusal(["--metrics-port", "70000"], {"INFERD_METRICS_PORT": "1"})
    assert by_flag == "--metrics-port 70000 is not a port number"
    mixed = _refusal([], {"INFERD_LOAD_MODELS": "plus"})
    assert mixed == "INFERD_LOAD_MODELS needs --model-control-mode explicit"


def test_no_repository_anywhere_is_refused() -> None:
    with pytest.raises(SettingsError, match="no model repository"):
        parse_serve_settings([]).to_config()


@pytest.mark.parametrize(
    ("config", "message"),
    [
        ({"grpc_port": 70000}, "grpc_port 70000 is not a port number"),
        ({"grace_s": -1}, "grace_s -1 must be a non-negative number of seconds"),
        ({"state_poll_s": 0}, "state_poll_s 0 must be a positive number of seconds"),
        ({"engine_timeout_s": float("nan")}, "engine_timeout_s nan must be a positive"),
        ({"max_message_bytes": 0}, "max_message_bytes 0 must be at least 1"),
        ({"workers": 0}, "workers 0 must be at least 1"),
        ({"log_level": "LOUD"}, "log_level 'LOUD' is not one of DEBUG"),
        ({"gil_switch_interval_s": 2.0}, "gil_switch_interval_s 2 must be between 0 and 1"),
    ],
)
def test_embedded_configs_are_checked_alike(
    tmp_path: Path, config: dict[str, Any], message: str
) -> None:
    with pytest.raises(StartupError, match=message):
        InferdServer(ServerConfig(model_repository=tmp_path, **config))


@pytest.mark.parametrize(
    ("args", "name", "value"),
    [
        (["--grace", "5"], "grace_s", 5.0),
        (["--repository-poll-secs", "3"], "repository_poll_s", 3.0),
        (["--max-message-mb", "2"], "max_message_bytes", 2 << 20),
        (["--max-metadata-kb", "8"], "max_metadata_bytes", 8 << 10),
        (["--engine-timeout-ms", "1500"], "engine_timeout_s", 1.5),
        (["--gil-switch-interval-us", "200"], "gil_switch_interval_s", 0.0002),
        (["--gil-switch-interval-us", "0"], "gil_switch_interval_s", None),
        (["--tls-cert", "c.pem"], "tls_cert_file", Path("c.pem")),
        (["--tls-key", "k.pem"], "tls_key_file", Path("k.pem")),
        (["--tls-client-ca", "ca.pem"], "tls_client_ca_file", Path("ca.pem")),
        (["--auth-tokens", "t.json"], "auth_tokens_file", Path("t.json")),
        (["--jwt-keys", "j.pem"], "jwt_keys_file", Path("j.pem")),
        (["--response-cache-byte-size", "1048576"], "response_cache_bytes", 1 << 20),
    ],
)
def test_old_spellings_still_work_and_warn(args: list[str], name: str, value: Any) -> None:
    settings = parse_serve_settings(args)
    assert settings.values[name] == (value if value is None else pytest.approx(value))
    new_flag = next(s.flag for s in SETTINGS if s.name == name)
    assert settings.deprecations() == [
        f"{args[0]} is deprecated and goes in the next release; use {new_flag} "
        + ("(seconds)" if name.endswith("_s") else "(bytes, or e.g. 64MiB)" if "bytes" in name
           else "(same value)")
    ]  # fmt: skip
    assert settings.name(name) == new_flag


def test_the_cli_logs_an_old_spelling_once(tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "inferd", "serve", "--model-repository", str(tmp_path),
         "--log-format", "text", "--grace", "5", "--grace", "6",
         "--gil-switch-interval-us", "2000000"],
        capture_output=True, text=True, timeout=60, cwd=ROOT,
    )  # fmt: skip
    assert done.returncode == 2
    lines = done.stderr.strip().splitlines()
    assert sum("--grace is deprecated" in line and "--grace-s" in line for line in lines) == 1
    assert sum("--gil-switch-interval-us is deprecated" in line for line in lines) == 1
    # The value, given the old way, is refused under its new name.
    assert lines[-1] == "error: --gil-switch-interval-s 2 must be between 0 and 1 (seconds)"


def test_sizes_read_with_binary_units() -> None:
    assert parse_size("1048576") == 1 << 20
    assert parse_size("64MiB") == 64 << 20
    assert parse_size("16 kib") == 16 << 10
    assert parse_size("1GiB") == 1 << 30
    for bad in ("64MB", "1.5MiB", "-1", ""):
        with pytest.raises(BadValue):
            parse_size(bad)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_the_port_from_the_environment_is_served(demo_repository: Path) -> None:
    port = _free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("INFERD_")}
    env["INFERD_GRPC_PORT"] = str(port)
    env["INFERD_HTTP_PORT"] = "0"  # not Triton's 8000, which another server may hold
    proc = subprocess.Popen(
        [sys.executable, "-m", "inferd", "serve", "--model-repository", str(demo_repository)],
        cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 60
        with InferenceClient(f"127.0.0.1:{port}") as client:
            while True:
                assert proc.poll() is None, proc.stderr.read() if proc.stderr else ""
                try:
                    if client.is_server_ready(timeout=1):
                        break
                except InferenceServerError:
                    pass
                assert time.monotonic() < deadline, "server never became ready"
                time.sleep(0.2)
    finally:
        proc.terminate()
        proc.wait(30)
        if proc.stderr:
            proc.stderr.close()


def test_the_response_cache_size_takes_units_and_zero() -> None:
    assert parse_serve_settings(["--response-cache-bytes", "64MiB"]).values[
        "response_cache_bytes"
    ] == (64 << 20)
    env = {"INFERD_RESPONSE_CACHE_BYTES": "0"}
    assert parse_serve_settings([], env).values["response_cache_bytes"] == 0
