"""Config loading: the shipped example is valid, and each broken variant names its key and line.

Broken variants are the example with one line changed, so they stay realistic as the example
grows; the expected line is found in the variant's own text.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from bot.app import check_config
from bot.config import load_settings
from bot.errors import ConfigError
from tests.harness import EXAMPLE, ROOT


def place(tmp_path: Path, text: str) -> Path:
    """Write a config next to a link to the shipped playbooks (relative paths resolve as in the repo)."""
    (tmp_path / "playbooks").symlink_to(ROOT / "playbooks")
    path = tmp_path / "config.yaml"
    path.write_text(text, encoding="utf-8")
    return path


def variant(old: str, new: str) -> str:
    text = EXAMPLE.read_text(encoding="utf-8")
    assert text.count(old) == 1, f"the example no longer has exactly one {old!r}"
    return text.replace(old, new)


def line_of(text: str, needle: str) -> int:
    hits = [i for i, line in enumerate(text.splitlines(), start=1) if needle in line]
    assert len(hits) == 1, (needle, hits)
    return hits[0]


def test_example_config_loads_with_its_documented_shape():
    settings, doc = load_settings(EXAMPLE)
    assert settings.environment == "dev"
    assert set(settings.intake.sources) == {"alertmanager", "grafana", "pagerduty", "generic"}
    assert {s.auth for s in settings.intake.sources.values()} == {"bearer", "hmac"}
    assert [i.id for i in settings.identities] == ["local-admin", "second-approver"]
    assert settings.audit.hmac_key_env == "OODA_AUDIT_HMAC_KEY"
    assert settings.store.synchronous == "full"
    assert settings.db_path == ROOT / "data" / "ooda.db"  # relative to the config file, not the cwd
    assert doc.line_of(("intake", "sources", "pagerduty")) == line_of(EXAMPLE.read_text(), "    pagerduty:")


def test_example_config_passes_every_check(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # nothing may depend on where the command is run from
    settings, problems = check_config(place(tmp_path, EXAMPLE.read_text(encoding="utf-8")))
    assert problems == []
    assert settings.environment == "dev"


BROKEN = [
    pytest.param("  port: 8080", "  port: 8080\n  hots: 0.0.0.0", "  hots:", "server.hots", "unknown key",
                 id="unknown-key"),
    pytest.param("  port: 8080", "  port: eighty", "  port: eighty", "server.port", "valid integer",
                 id="wrong-type"),
    pytest.param("  synchronous: full ", "  synchronous: sometimes ", "  synchronous:", "store.synchronous",
                 "'full' or 'normal'", id="bad-choice"),
    pytest.param("      secret_env: OODA_GRAFANA_TOKEN\n", "", "    grafana:", "intake.sources.grafana.secret_env",
                 "required when auth is 'bearer'", id="bearer-without-secret-env"),
    pytest.param("      secret_env: OODA_GRAFANA_TOKEN", "      secret_env: hunter2-not-a-name!",
                 "hunter2-not-a-name", "intake.sources.grafana.secret_env", "NAME of an environment variable",
                 id="secret-instead-of-env-name"),
    pytest.param("  autonomy_ceiling: L2", "  autonomy_ceiling: L9", "  autonomy_ceiling:", "policy.autonomy_ceiling",
                 "L9", id="bad-policy-value"),
    pytest.param("      flags.set: {max: 3, per_s: 3600}", "      flags.set: {max: lots, per_s: 3600}", "flags.set:",
                 "policy.rate_limits.tools.flags.set.max", "integer", id="bad-policy-rate-limit"),
    pytest.param("      du: {path: /usr/bin/du,", "      du: {path: du,", "      du: {path: du,",
                 "tools.shell.commands.du.path", "absolute path", id="relative-shell-path"),
    pytest.param("  local: {enabled: true}", "  local: {enabled: true}\n  slack:\n    bot_token_env: SLACK_BOT_TOKEN\n"
                 "    default_chanel: '#ops'", "    default_chanel:", "chat.slack.default_chanel", "unknown key",
                 id="slack-section-typo"),
    pytest.param("  local: {enabled: true}", "  local: {enabled: true}\n  slack:\n    send_interval_s: -1\n"
                 "    default_channel: '#ops'", "    send_interval_s:", "chat.slack.send_interval_s",
                 "greater than or equal to 0", id="slack-section-bad-value"),
    pytest.param("  retention_days: 30 ", "  retention_days: 0 ", "  retention_days:", "store.retention_days",
                 "greater than or equal to 1", id="retention-of-zero-days"),
    pytest.param("  level: info", "  level: loud", "  level: loud", "log.level", "loud", id="bad-log-level"),
    pytest.param("  cron: \"0 9 * * 1-5\"", "  cron: \"0 9 * *\"", "  cron: \"0 9 * *\"", "digest.cron",
                 "has 4 fields", id="bad-digest-cron"),
]


@pytest.mark.parametrize(("old", "new", "at_line", "key", "says"), BROKEN)
def test_broken_config_names_the_key_and_its_line(tmp_path, old, new, at_line, key, says):
    text = variant(old, new)
    path = place(tmp_path, text)

    _, problems = check_config(path)

    expected = f"{path}:{line_of(text, at_line)}: {key}"
    matching = [p for p in problems if p.startswith(expected)]
    assert matching, f"no problem starts with {expected!r}; got {problems}"
    assert says in matching[0]


def test_auth_none_is_refused_outside_dev_naming_the_line(tmp_path):
    text = variant("environment: dev ", "environment: prod ").replace(
        "      auth: bearer            # Alertmanager", "      auth: none              # Alertmanager")
    path = place(tmp_path, text)

    with pytest.raises(ConfigError) as caught:
        load_settings(path)

    line = line_of(text, "auth: none")
    assert str(caught.value).startswith(f"{path}:{line}: intake.sources.alertmanager.auth:")
    assert "only allowed in environment dev" in str(caught.value)


def test_every_problem_is_reported_at_once(tmp_path):
    text = variant("  port: 8080", "  port: eighty\n  hots: x").replace("  level: info", "  level: loud")
    path = place(tmp_path, text)

    with pytest.raises(ConfigError) as caught:
        load_settings(path)

    fields = [p.split(": ")[1] for p in caught.value.problems]
    assert sorted(fields) == ["log.level", "server.hots", "server.port"]


def test_yaml_syntax_and_duplicate_keys_name_the_line(tmp_path):
    text = variant("  port: 8080", "  port: 8080\n  port: 9090")
    path = place(tmp_path, text)
    with pytest.raises(ConfigError, match=rf"{path}:{line_of(text, 'port: 9090')}: .*duplicate key 'port'"):
        load_settings(path)

    broken = tmp_path / "syntax.yaml"
    broken.write_text("server:\n  port: [8080\nstore: {}\n", encoding="utf-8")
    with pytest.raises(ConfigError, match=r"syntax.yaml:\d+: invalid YAML"):
        load_settings(broken)


def test_missing_file_and_non_mapping_are_config_errors(tmp_path):
    with pytest.raises(ConfigError, match="cannot read file"):
        load_settings(tmp_path / "absent.yaml")
    listing = tmp_path / "list.yaml"
    listing.write_text("- a\n- b\n", encoding="utf-8")
    with pytest.raises(ConfigError, match="must be a mapping"):
        load_settings(listing)
