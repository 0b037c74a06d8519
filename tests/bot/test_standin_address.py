"""``${standin.*}`` placeholders: filled from ``standin.port``, refused where they would mislead."""

from __future__ import annotations

from pathlib import Path

import pytest

from bot.config import load_settings
from bot.errors import ConfigError


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "config.yaml"
    path.write_text(text)
    return path


def test_placeholders_follow_the_standin_port_and_the_override(tmp_path: Path):
    path = write(tmp_path, "standin: {enabled: true, port: 9100}\n"
                           "vars: {api: '${standin.url}/v1', hosts: '${standin.address} ${standin.ssh_address}'}\n")
    settings, _ = load_settings(path)
    assert settings.vars == {"api": "http://127.0.0.1:9100/v1", "hosts": "127.0.0.1:9100 127.0.0.1:9101"}
    settings, _ = load_settings(path, standin_port=9200)
    assert (settings.standin.port, settings.standin.ssh_listen_port) == (9200, 9201)
    assert settings.vars["api"] == "http://127.0.0.1:9200/v1"


def test_an_unknown_placeholder_is_named_with_its_line(tmp_path: Path):
    path = write(tmp_path, "vars:\n  api: '${standin.uri}'\n")
    with pytest.raises(ConfigError, match=r"config.yaml:2: vars.api: unknown placeholder '\$\{standin.uri\}'"):
        load_settings(path)


def test_outside_dev_the_demo_address_is_refused(tmp_path: Path):
    path = write(tmp_path, "environment: prod\nvars:\n  api: '${standin.url}'\n")
    with pytest.raises(ConfigError, match="only for environment dev; write the URL of your own service"):
        load_settings(path)
