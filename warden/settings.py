"""The one typed settings object; nothing else reads the environment."""

from __future__ import annotations

from ipaddress import IPv4Network, IPv6Address, IPv6Network, ip_address, ip_network
from typing import Annotated, Literal
from urllib.parse import urlsplit

from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from contract.protocol import split_nodes

SMTP_SCHEMES = ("smtp", "smtp+starttls", "smtps")

DEV_JWT_SECRET = "warden-dev-secret-do-not-use-in-production"
MIN_PRODUCTION_SECRET_BYTES = 32
# Encrypts what Warden keeps at rest (idempotent replies; CONTRACT §6: signing keys, TOTP).
DEV_KEY_ENCRYPTION_KEY = "warden-dev-key-encryption-key-do-not-use-in-production"
# The local services, by the variable that points elsewhere (tests and benchmarks read these).
DEFAULT_URLS = {
    "WARDEN_DATABASE_URL": "postgresql+asyncpg://postgres:postgres@127.0.0.1:5432/warden",
    "WARDEN_AMQP_URL": "amqp://guest:guest@127.0.0.1:5672/",
    "WARDEN_REDIS_URL": "redis://127.0.0.1:6379/0",
}


def is_loopback(host: str) -> bool:
    """Whether a listener on `host` can be reached from this machine only.

    An address is judged by itself; of names only `localhost` is trusted, since any other
    may resolve to a public address (and "" or "0.0.0.0" or "::" mean every interface).
    """
    if host.lower() == "localhost":
        return True
    try:
        address = ip_address(host.strip("[]"))
    except ValueError:
        return False
    mapped = address.ipv4_mapped if isinstance(address, IPv6Address) else None
    return address.is_loopback or (mapped is not None and mapped.is_loopback)


class Settings(BaseSettings):
    """Every WARDEN_* variable; the README's settings table lists the same."""

    model_config = SettingsConfigDict(env_prefix="WARDEN_", env_file=".env", extra="ignore")

    database_url: SecretStr = SecretStr(DEFAULT_URLS["WARDEN_DATABASE_URL"])
    amqp_url: SecretStr = SecretStr(DEFAULT_URLS["WARDEN_AMQP_URL"])
    # The broker user of the edge when it is not WARDEN_AMQP_URL's: the one whose x-client-ip
    # the worker believes. Empty: the edge logs in as the worker does.
    amqp_edge_user: str = ""
    redis_url: SecretStr = SecretStr(DEFAULT_URLS["WARDEN_REDIS_URL"])
    env: Literal["dev", "test", "production"] = "dev"
    jwt_secret: SecretStr = SecretStr(DEV_JWT_SECRET)
    jwt_issuer: str = "warden"
    # EdDSA/ES256: signed with the key store's active key (published at /.well-known/jwks.json);
    # HS*: signed with WARDEN_JWT_SECRET, and the published key set is empty.
    jwt_algorithm: Literal["EdDSA", "ES256", "HS256", "HS384", "HS512"] = "EdDSA"
    jwt_audience: str = ""  # when set, every access token carries it as `aud`, checked on read
    key_rotation_days: int = Field(default=30, ge=1)
    # Cache-Control max-age of the key set; a new key is published this long before it signs.
    jwks_max_age: int = Field(default=300, ge=0, le=86400)
    public_url: str = "http://127.0.0.1:8080"
    jwt_leeway: int = Field(default=10, ge=0, le=300)
    http_host: str = "127.0.0.1"
    http_port: int = Field(default=8080, ge=0, le=65535)
    access_token_ttl: int = Field(default=1800, ge=1)
    refresh_token_ttl: int = Field(default=604800, ge=1)
    # CONTRACT §8: seconds after a rotation in which the refresh token just spent gets the
    # session's current pair instead of counting as reuse (0: strict, every reuse revokes).
    refresh_reuse_interval: int = Field(default=0, ge=0, le=3600)
    bcrypt_rounds: int = Field(default=12, ge=4, le=31)
    bcrypt_threads: int = Field(default=2, ge=1, le=64)
    bcrypt_nice: int = Field(default=5, ge=0, le=19)
    rpc_timeout: float = Field(default=10, gt=0)
    login_max_failures: int = Field(default=10, ge=1)
    login_window: int = Field(default=900, ge=1)
    login_ip_max_failures: int = Field(default=100, ge=1)
    register_ip_max: int = Field(default=20, ge=1)
    register_window: int = Field(default=3600, ge=1)
    trusted_proxies: Annotated[tuple[IPv4Network | IPv6Network, ...], NoDecode] = ()
    log_format: Literal["json", "console"] = "json"
    log_level: Literal["debug", "info", "warning", "error"] = "info"
    db_pool_size: int = Field(default=20, ge=1)
    db_max_overflow: int = Field(default=10, ge=0)
    worker_prefetch: int = Field(default=32, ge=1)
    worker_login_prefetch: int = Field(default=4, ge=1)
    # RPC request queues: quorum (replicated; the default) or classic (one node only).
    rpc_queue_type: Literal["quorum", "classic"] = "quorum"
    idempotency_ttl: int = Field(default=86400, ge=1)
    metrics_port: int = Field(default=9100, ge=0, le=65535)
    superuser_password: SecretStr | None = None
    key_encryption_key: SecretStr = SecretStr(DEV_KEY_ENCRYPTION_KEY)
    # The issuer an authenticator app shows beside the account (the otpauth:// URI's).
    mfa_issuer: str = Field(default="Warden", min_length=1, max_length=64)

    # CONTRACT §7: mail. Empty SMTP URL: each mail is one log line (dev and test only).
    smtp_url: SecretStr = SecretStr("")
    smtp_timeout: float = Field(default=10, gt=0)
    mail_from: str = "Warden <no-reply@localhost>"
    product_name: str = "Warden"
    email_token_ttl: int = Field(default=3600, ge=60)
    require_verified_email: bool = False
    mail_max_per_hour: int = Field(default=5, ge=1)
    mail_max_attempts: int = Field(default=10, ge=1, le=100)
    mail_retry_base: float = Field(default=5.0, gt=0)  # seconds before the first retry, doubling
    mail_retry_max: float = Field(default=900.0, gt=0)  # the longest wait between two attempts
    mail_prefetch: int = Field(default=4, ge=1)

    @property
    def asymmetric(self) -> bool:
        """Tokens are signed with the key store's keys, not with WARDEN_JWT_SECRET."""
        return not self.jwt_algorithm.startswith("HS")

    @property
    def amqp_urls(self) -> tuple[str, ...]:
        """The broker's nodes, in the order WARDEN_AMQP_URL names them (CONTRACT §10)."""
        return split_nodes(self.amqp_url.get_secret_value())

    @property
    def dev_secret_in_use(self) -> bool:
        """Tokens are signed with DEV_JWT_SECRET, which anyone who has read the source knows."""
        return self.jwt_secret.get_secret_value() == DEV_JWT_SECRET

    @field_validator("trusted_proxies", mode="before")
    @classmethod
    def _split_proxies(cls, value: object) -> object:
        if isinstance(value, str):
            return tuple(ip_network(p.strip(), strict=False) for p in value.split(",") if p.strip())
        return value

    @field_validator("amqp_url")
    @classmethod
    def _one_cluster(cls, value: SecretStr) -> SecretStr:
        split_nodes(value.get_secret_value())
        return value

    @model_validator(mode="after")
    def _classic_queues_on_one_node(self) -> Settings:
        if self.rpc_queue_type == "classic" and len(self.amqp_urls) > 1:
            raise ValueError(
                "WARDEN_RPC_QUEUE_TYPE=classic is for a broker of one node: a classic queue"
                " lives on one node of a cluster and is gone while that node is down"
            )
        return self

    @model_validator(mode="after")
    def _production_needs_a_secret(self) -> Settings:
        secret = self.jwt_secret.get_secret_value()
        if self.env == "production" and (
            secret == DEV_JWT_SECRET or len(secret.encode()) < MIN_PRODUCTION_SECRET_BYTES
        ):
            raise ValueError(
                "WARDEN_JWT_SECRET must be set to at least 32 bytes when WARDEN_ENV=production"
            )
        return self

    @field_validator("smtp_url", mode="after")
    @classmethod
    def _smtp_url_scheme(cls, value: SecretStr) -> SecretStr:
        url = value.get_secret_value()
        if url and urlsplit(url).scheme not in SMTP_SCHEMES:
            raise ValueError(f"WARDEN_SMTP_URL must start with one of {', '.join(SMTP_SCHEMES)}")
        return value

    @field_validator("mail_from", mode="after")
    @classmethod
    def _mail_from_one_line(cls, value: str) -> str:
        if "\r" in value or "\n" in value or "@" not in value:
            raise ValueError(
                "WARDEN_MAIL_FROM must be one address, e.g. 'Warden <no-reply@example.com>'"
            )
        return value

    @field_validator("public_url", mode="after")
    @classmethod
    def _public_url_http(cls, value: str) -> str:
        parts = urlsplit(value)
        if (
            parts.scheme not in ("http", "https")
            or not parts.netloc
            or parts.query
            or parts.fragment
        ):
            raise ValueError("WARDEN_PUBLIC_URL must be an http(s) URL without query or fragment")
        return value.rstrip("/")

    @model_validator(mode="after")
    def _production_needs_smtp(self) -> Settings:
        if self.env == "production" and not self.smtp_url.get_secret_value():
            raise ValueError("WARDEN_SMTP_URL must be set when WARDEN_ENV=production")
        return self

    @model_validator(mode="after")
    def _production_needs_a_key_encryption_key(self) -> Settings:
        key = self.key_encryption_key.get_secret_value()
        if self.env == "production" and (
            key == DEV_KEY_ENCRYPTION_KEY or len(key.encode()) < MIN_PRODUCTION_SECRET_BYTES
        ):
            raise ValueError(
                "WARDEN_KEY_ENCRYPTION_KEY must be set to at least 32 bytes"
                " when WARDEN_ENV=production"
            )
        return self
