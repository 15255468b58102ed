"""Mails as rendered: both parts, the link, the headers, and no header a value can add."""

from __future__ import annotations

import email
import email.policy
from datetime import UTC, datetime

import pytest

from contract.mail import MailJob
from handlers.mail_render import Branding, MailRenderer
from storage.smtp import SmtpTarget

NOW = datetime(2026, 12, 7, 2, 0, tzinfo=UTC)
EXPIRES = datetime(2026, 12, 7, 3, 0, tzinfo=UTC)
BRANDING = Branding("Acme Login", "https://login.acme.example", "Acme <no-reply@acme.example>")
JOB_ID = "6f0c2b7e-1111-4222-8333-444455556666"


def job(**changes: object) -> MailJob:
    values: dict[str, object] = {
        "id": JOB_ID,
        "kind": "verify_email",
        "to": "alice@example.com",
        "user_id": 7,
        "username": "alice",
        "expires_at": EXPIRES,
    }
    return MailJob.model_validate(values | changes)


def parsed(raw: bytes) -> email.message.EmailMessage:
    message = email.message_from_bytes(raw, policy=email.policy.default)
    assert isinstance(message, email.message.EmailMessage)
    return message


def test_a_verification_mail_has_both_parts_the_link_the_expiry_and_its_headers() -> None:
    renderer = MailRenderer(BRANDING)
    message = parsed(renderer.render(job(), "TOKEN123", NOW).as_bytes())

    assert message["From"] == "Acme <no-reply@acme.example>"
    assert message["To"] == "alice@example.com"
    assert message["Subject"] == "Verify your email address for Acme Login"
    assert message["Message-ID"] == f"<{JOB_ID}@acme.example>"
    assert message["Date"] == "Mon, 07 Dec 2026 02:00:00 +0000"
    text = message.get_body(("plain",))
    html = message.get_body(("html",))
    assert text is not None
    assert html is not None
    link = "https://login.acme.example/account/verify#token=TOKEN123"
    assert link in text.get_content()
    assert f'href="{link}"' in html.get_content()
    assert "2026-12-07 03:00 UTC" in text.get_content()
    assert "<img" not in html.get_content()  # no tracking pixel


def test_html_is_escaped_and_text_is_not() -> None:
    message = MailRenderer(BRANDING).render(job(username="<b>al&ice</b>"), "T", NOW)
    html = message.get_body(("html",))
    text = message.get_body(("plain",))
    assert html is not None
    assert text is not None
    assert "&lt;b&gt;al&amp;ice&lt;/b&gt;" in html.get_content()
    assert "<b>al&ice</b>" in text.get_content()


def test_a_reset_mail_links_to_the_reset_page_and_a_notice_has_no_link() -> None:
    renderer = MailRenderer(BRANDING)
    reset = renderer.render(job(kind="reset_password"), "TOK", NOW).get_body(("plain",))
    assert reset is not None
    assert "https://login.acme.example/account/reset-password#token=TOK" in reset.get_content()
    notice = renderer.render(
        job(kind="email_changed", new_email="alice@new.example", expires_at=None), None, NOW
    )
    body = notice.get_body(("plain",))
    assert body is not None
    assert "alice@new.example" in body.get_content()
    assert "token" not in body.get_content()


@pytest.mark.parametrize(
    "to",
    [
        "alice@example.com\r\nBcc: evil@example.com",
        "alice@example.com\nBcc: evil@example.com",
        "alice@example.com\rX-Injected: yes",
    ],
)
def test_an_address_with_a_line_break_never_becomes_a_header(to: str) -> None:
    with pytest.raises(ValueError, match=r"CR or LF|linefeed|carriage"):
        MailRenderer(BRANDING).render(job(to=to), "T", NOW)


@pytest.mark.parametrize(
    ("product", "sender"),
    [
        ("Acme\r\nBcc: evil@example.com", "Acme <no-reply@acme.example>"),
        ("Acme", "Acme <no-reply@acme.example>\r\nBcc: evil@example.com"),
    ],
)
def test_a_product_name_or_sender_with_a_line_break_never_becomes_a_header(
    product: str, sender: str
) -> None:
    renderer = MailRenderer(Branding(product, "https://login.acme.example", sender))
    with pytest.raises(ValueError):
        renderer.render(job(), "T", NOW).as_bytes()


def test_a_name_with_a_line_break_stays_in_the_body() -> None:
    message = MailRenderer(BRANDING).render(job(username="al\r\nBcc: evil@x.example"), "T", NOW)
    raw = parsed(message.as_bytes())
    assert raw["Bcc"] is None
    assert set(raw.keys()) == {
        "From", "To", "Subject", "Date", "Message-ID", "Auto-Submitted", "MIME-Version",
        "Content-Type",
    }  # fmt: skip


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("smtp://mail.example.com:2525", ("mail.example.com", 2525, False, False, None, None)),
        ("smtp://mail.example.com", ("mail.example.com", 25, False, False, None, None)),
        (
            "smtp+starttls://user:p%40ss@mail.example.com:587",
            ("mail.example.com", 587, False, True, "user", "p@ss"),
        ),
        ("smtps://u:p@mail.example.com", ("mail.example.com", 465, True, False, "u", "p")),
    ],
)
def test_the_smtp_url_says_host_port_tls_and_credentials(
    url: str, expected: tuple[object, ...]
) -> None:
    t = SmtpTarget.parse(url)
    assert (t.host, t.port, t.use_tls, t.start_tls, t.username, t.password) == expected
