"""Settings refuse an unsafe production start; logs never carry secrets."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest
import structlog
from pydantic import ValidationError

from contract.protocol import node_address
from warden import logs
from warden.settings import DEV_JWT_SECRET, DEV_KEY_ENCRYPTION_KEY, Settings

LONG_KEY = "k" * 32


SMTP_URL = "smtp+starttls://warden:secret@mail.example.com:587"


def test_production_refuses_the_dev_secret(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WARDEN_ENV", "production")
    monkeypatch.delenv("WARDEN_JWT_SECRET", raising=False)
    with pytest.raises(ValidationError, match="at least 32 bytes"):
        Settings()


def test_production_refuses_a_short_secret() -> None:
    with pytest.raises(ValidationError, match="at least 32 bytes"):
        Settings(env="production", jwt_secret="x" * 31, key_encryption_key=LONG_KEY)  # type: ignore[arg-type]


def test_production_starts_with_a_long_secret_and_key_encryption_key() -> None:
    settings = Settings(
        env="production",
        jwt_secret="x" * 32,  # type: ignore[arg-type]
        key_encryption_key=LONG_KEY,  # type: ignore[arg-type]
        smtp_url=SMTP_URL,  # type: ignore[arg-type]
    )
    assert settings.jwt_secret.get_secret_value() != DEV_JWT_SECRET
    assert settings.key_encryption_key.get_secret_value() != DEV_KEY_ENCRYPTION_KEY


def test_production_refuses_to_start_without_its_own_key_encryption_key(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("WARDEN_KEY_ENCRYPTION_KEY", raising=False)
    refused = "WARDEN_KEY_ENCRYPTION_KEY must be set to at least 32 bytes"
    with pytest.raises(ValidationError, match=refused) as unset:
        Settings(env="production", jwt_secret="x" * 32, smtp_url=SMTP_URL, _env_file=None)  # type: ignore[arg-type, call-arg]
    with pytest.raises(ValidationError, match=refused) as short:
        Settings(
            env="production",
            jwt_secret="x" * 32,  # type: ignore[arg-type]
            key_encryption_key="k" * 31,  # type: ignore[arg-type]
            smtp_url=SMTP_URL,  # type: ignore[arg-type]
        )
    assert "k" * 31 not in str(short.value)
    assert DEV_KEY_ENCRYPTION_KEY not in str(unset.value)


def test_production_refuses_to_start_without_an_smtp_url(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("WARDEN_SMTP_URL", raising=False)
    with pytest.raises(ValidationError, match="WARDEN_SMTP_URL must be set"):
        Settings(env="production", jwt_secret="x" * 32, key_encryption_key=LONG_KEY, _env_file=None)  # type: ignore[arg-type, call-arg]
    for env in ("dev", "test"):  # there, each mail is a log line instead
        assert Settings(env=env, _env_file=None).smtp_url.get_secret_value() == ""  # type: ignore[call-arg]


@pytest.mark.parametrize(
    "url", ["http://mail.example.com", "smtp+ssl://x:1", "mail.example.com:25", "smtps"]
)
def test_an_smtp_url_of_another_scheme_is_refused(url: str) -> None:
    with pytest.raises(ValidationError, match="WARDEN_SMTP_URL must start with one of"):
        Settings(smtp_url=url)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("setting", "value"),
    [
        ("mail_from", "Warden <a@b.example>\r\nBcc: evil@example.com"),
        ("mail_from", "no address"),
        ("public_url", "ftp://warden.example.com"),
        ("public_url", "https://warden.example.com/?x=1"),
        ("public_url", "warden.example.com"),
    ],
)
def test_a_mail_setting_that_could_break_a_mail_is_refused(setting: str, value: str) -> None:
    with pytest.raises(ValidationError):
        Settings.model_validate({setting: value})


def test_the_public_url_loses_its_trailing_slash() -> None:
    assert Settings(public_url="https://warden.example.com/").public_url == (
        "https://warden.example.com"
    )


def test_dev_and_test_have_a_fixed_key_encryption_key(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("WARDEN_KEY_ENCRYPTION_KEY", raising=False)
    for env in ("dev", "test"):
        settings = Settings(env=env, _env_file=None)  # type: ignore[call-arg]
        assert settings.key_encryption_key.get_secret_value() == DEV_KEY_ENCRYPTION_KEY


def test_the_contract_defaults_hold(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("DATABASE_URL", "AMQP_URL", "REDIS_URL", "ENV", "HTTP_PORT", "RPC_TIMEOUT"):
        monkeypatch.delenv(f"WARDEN_{name}", raising=False)
    s = Settings(_env_file=None)  # type: ignore[call-arg]
    assert s.database_url.get_secret_value().endswith("@127.0.0.1:5432/warden")
    assert s.amqp_url.get_secret_value() == "amqp://guest:guest@127.0.0.1:5672/"
    assert s.redis_url.get_secret_value() == "redis://127.0.0.1:6379/0"
    assert (s.env, s.http_host, s.http_port) == ("dev", "127.0.0.1", 8080)
    assert (s.access_token_ttl, s.refresh_token_ttl, s.bcrypt_rounds) == (1800, 604800, 12)
    assert (s.rpc_timeout, s.login_max_failures, s.login_window) == (10, 10, 900)
    assert (s.login_ip_max_failures, s.trusted_proxies, s.jwt_issuer) == (100, (), "warden")
    assert (s.log_format, s.db_pool_size, s.db_max_overflow) == ("json", 20, 10)


def test_trusted_proxies_are_a_comma_separated_list_of_addresses_and_networks(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("WARDEN_TRUSTED_PROXIES", "10.0.0.0/8, 192.0.2.1")
    assert [str(n) for n in Settings().trusted_proxies] == ["10.0.0.0/8", "192.0.2.1/32"]


@pytest.mark.parametrize("rounds", [3, 32])
def test_bcrypt_rounds_outside_4_to_31_are_refused(rounds: int) -> None:
    with pytest.raises(ValidationError):
        Settings(bcrypt_rounds=rounds)


def test_the_redactor_hides_secrets_at_any_depth_and_masks_dsn_passwords() -> None:
    event = {
        "event": "connecting to postgresql://warden:hunter2@db/warden",
        "password": "hunter2",
        "body": {"new_password": "x", "items": [{"access_token": "t"}], "email": "a@b.io"},
        "authorization": "Bearer abc",
        "hashed_password": "$2b$12$abc",
        "url": "amqp://guest:guest@rabbit:5672/",
    }
    out = logs.redact_processor(None, "info", dict(event))
    text = json.dumps(out)
    for secret in ("hunter2", "Bearer abc", "$2b$12$abc", "guest:guest"):
        assert secret not in text
    assert out["body"]["email"] == "a@b.io"
    assert out["url"] == "amqp://guest:***@rabbit:5672/"


def test_configured_logging_writes_json_lines_without_secrets(
    capsys: pytest.CaptureFixture[str],
) -> None:
    logs.configure("json", "info")
    try:
        structlog.get_logger("test").info("login", password="hunter2", user="alice")
        logging.getLogger("plain").warning("dsn redis://:hunter2@cache:6379/0")
        lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    finally:
        structlog.reset_defaults()
        logging.getLogger().handlers.clear()
    assert lines[0]["event"] == "login"
    assert lines[0]["password"] == logs.REDACTED
    assert "hunter2" not in json.dumps(lines)


def test_every_setting_is_in_the_readme_table() -> None:
    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    rows = {line for line in readme.splitlines() if line.startswith("| `WARDEN_")}
    missing = [
        name
        for name in Settings.model_fields
        if not any(f"`WARDEN_{name.upper()}`" in row for row in rows)
    ]
    assert missing == []


def test_several_broker_nodes_are_one_clusters_and_named_without_credentials() -> None:
    nodes = "amqp://u:p@10.0.0.1/v, amqp://u:p@10.0.0.2:5673/v,amqp://u:p@[::1]/v"
    s = Settings(amqp_url=nodes)  # type: ignore[arg-type]
    assert s.amqp_urls == (
        "amqp://u:p@10.0.0.1/v",
        "amqp://u:p@10.0.0.2:5673/v",
        "amqp://u:p@[::1]/v",
    )
    assert [node_address(n) for n in s.amqp_urls] == [
        "10.0.0.1:5672",
        "10.0.0.2:5673",
        "[::1]:5672",
    ]
    assert node_address("amqps://u:p@h/") == "h:5671"
    assert Settings().amqp_urls == ("amqp://guest:guest@127.0.0.1:5672/",)


@pytest.mark.parametrize(
    ("value", "refused"),
    [
        ("amqp://u:p@a/v,,amqp://u:p@b/v", "empty node"),
        ("amqp://u:p@a/v,amqp://u:other@b/v", "node 2 differs"),
        ("amqp://u:p@a/v,amqp://u:p@b/w", "node 2 differs"),
        ("amqp://u:p@a/v,amqps://u:p@b/v", "node 2 differs"),
        ("amqp://u:p@a/v,http://u:p@b/v", "node 2 is not an amqp"),
        ("amqp://u:p@a:x/v", "node 1 is not a URL"),
        ("amqp:///v", "node 1 is not an amqp"),
    ],
)
def test_broker_nodes_that_are_not_one_clusters_are_refused_without_echoing_them(
    value: str, refused: str
) -> None:
    with pytest.raises(ValidationError, match=refused) as error:
        Settings(amqp_url=value)  # type: ignore[arg-type]
    assert ":p@" not in str(error.value.errors(include_input=False))


def test_classic_rpc_queues_are_for_a_broker_of_one_node() -> None:
    assert Settings(rpc_queue_type="classic").rpc_queue_type == "classic"
    with pytest.raises(ValidationError, match="broker of one node"):
        Settings(rpc_queue_type="classic", amqp_url="amqp://u:p@a/v,amqp://u:p@b/v")  # type: ignore[arg-type]
