import pytest
from pydantic import BaseModel
from structlog.testing import capture_logs

from bot.audit.redaction import forget_secrets, redact, redact_text, register_secret


@pytest.fixture(autouse=True)
def _clean_registry():
    yield
    forget_secrets()


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("Authorization: Bearer abcdef1234567890", "Authorization: Bearer [redacted:bearer]"),
        ("slack xoxb-1234567890-abcdefghij", "slack [redacted:slack_token]"),
        ("app xapp-1-A0123-456789-abcdef", "app [redacted:slack_token]"),
        ("jwt eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxMjM0NTYifQ.sig_nature", "jwt [redacted:jwt]"),
        ("https://x.example/cb?token=abc123&page=2", "https://x.example/cb?token=[redacted:secret]&page=2"),
        ("password: hunter2", "password: [redacted:secret]"),
        ("gh ghp_abcdefghijklmnopqrstuvwxyz0123456789", "gh [redacted:github_token]"),
        ("aws AKIAABCDEFGHIJKLMNOP", "aws [redacted:aws_key]"),
        ("mail jane.doe+ops@example.co.uk now", "mail [redacted:email] now"),
        ("call +1 415 555 2671", "call [redacted:phone]"),
        ("call (415) 555-2671", "call [redacted:phone]"),
        ("call 415-555-2671.", "call [redacted:phone]."),
        ("ship to 1600 Pennsylvania Avenue", "ship to [redacted:address]"),
        ("-----BEGIN RSA PRIVATE KEY-----\nMIIE\n-----END RSA PRIVATE KEY-----", "[redacted:private_key]"),
    ],
)
def test_credentials_and_pii_in_text_are_masked(text, expected):
    assert redact_text(text) == expected


@pytest.mark.parametrize(
    "text",
    [
        "error_rate 0.12 at 2024-01-15T10:00:00Z",
        "pod checkout-7d9f8b6c5-x2x7k on 10.0.12.7:8080",
        "version v2.14.1 build 20240115 lag 125000",
        "rollout +5 to 30 percent",
        "see https://grafana.example.com/d/abc?orgId=1",
    ],
)
def test_ordinary_operational_text_is_left_alone(text):
    assert redact_text(text) == text


def test_registered_secrets_are_masked_inside_longer_text():
    register_secret("Zq8-very-secret-Value")
    assert redact_text("dsn=postgres://app:Zq8-very-secret-Value@db/x") == "dsn=postgres://app:[redacted:secret]@db/x"


def test_too_short_secrets_are_not_registered():
    register_secret("abc")
    assert redact_text("abc abc") == "abc abc"


def test_sensitive_keys_mask_whole_values_recursively_without_touching_the_input():
    data = {
        "api_key": "k",
        "X-Api-Key": "k",
        "clientSecret": "s",
        "Authorization": "whatever",
        "cookies": {"sid": "1"},
        "user": {"email": "a", "phone_number": "b", "name": "Ana"},
        "items": [{"password": 123456}, "plain"],
        "sessions_revoked": 3,
        "token_env": "FLAGS_TOKEN",
        "enabled": True,
        "session": None,
    }

    out = redact(data)

    assert out == {
        "api_key": "[redacted]",
        "X-Api-Key": "[redacted]",
        "clientSecret": "[redacted]",
        "Authorization": "[redacted]",
        "cookies": "[redacted]",
        "user": {"email": "[redacted]", "phone_number": "[redacted]", "name": "Ana"},
        "items": [{"password": "[redacted]"}, "plain"],
        "sessions_revoked": 3,
        "token_env": "FLAGS_TOKEN",
        "enabled": True,
        "session": None,
    }
    assert data["api_key"] == "k"  # a copy, never the input


def test_models_and_tuples_are_redacted_as_plain_data():
    class Login(BaseModel):
        who: str
        token: str

    assert redact((Login(who="a@b.io", token="t"), 1)) == [{"who": "[redacted:email]", "token": "[redacted]"}, 1]


def test_a_known_secret_too_short_to_mask_safely_is_refused_and_warned_about_once() -> None:
    with capture_logs() as logs:
        register_secret("xoxb-1")
        register_secret("xoxb-1")

    assert redact_text("token xoxb-1234567890-abcdefghij") == "token [redacted:slack_token]"
    assert [(e["event"], e["length"]) for e in logs] == [("config.secret_too_short", 6)]
    assert "xoxb-1" not in str(logs)


def test_known_secrets_are_masked_longest_first() -> None:
    register_secret("hunter2-hunter2")
    register_secret("hunter2-hunter2-and-more")

    assert redact_text("a hunter2-hunter2-and-more b hunter2-hunter2") == "a [redacted:secret] b [redacted:secret]"
