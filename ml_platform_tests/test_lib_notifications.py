"""Notifications reach real servers, a failing channel never silences the others, and no secret leaks.

Every channel is exercised against a server the test starts on 127.0.0.1: a stdlib HTTP server
standing in for Slack and the JSON webhook, and an aiosmtpd SMTP server (with AUTH) for email.
"""

from __future__ import annotations

import email
import email.policy
import json
import logging
import socket
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import dagster as dg
import pytest
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult, LoginPassword

from ml_platform.lib.config import NotificationsConfig
from ml_platform.lib.notifications import (
    EmailChannel,
    JsonWebhookChannel,
    Notification,
    SlackWebhookChannel,
    send_notification,
)
from ml_platform.resources.notifier import NotifierResource, notifier_from_config

# The test SMTP server takes AUTH without TLS on purpose (no certificates here); aiosmtpd warns about it.
pytestmark = pytest.mark.filterwarnings("ignore:Requiring AUTH while not requiring TLS:UserWarning")

LINK = "http://127.0.0.1:3000/runs/4f6d2c1a"
TOKEN = "s3cr3t-token"
SMTP_USER, SMTP_PASSWORD = "alerts", "sm7p-pa55w0rd"


def run_failure(**changes: Any) -> Notification:
    """A notification like the failure sensor sends, with a ten-line-plus traceback."""
    traceback = "\n".join(
        ["Traceback (most recent call last):"] + [f'  File "step.py", line {n}, in train' for n in range(20)]
    )
    values: dict[str, Any] = {
        "title": "Run failed: batch_pipeline for batch_0004",
        "severity": "error",
        "summary": "Step train_random_forest failed: ValueError: Input contains NaN.",
        "fields": {"run id": "4f6d2c1a", "job": "batch_pipeline", "partition": "batch_0004", "step": "train_rf"},
        "error": traceback,
        "link": LINK,
    }
    return Notification(**(values | changes))


# ---------------------------------------------------------------- servers


@pytest.fixture
def closed_port() -> Iterator[int]:
    """A port nobody listens on: bound (so no other test can take it) but not listening, so refused."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        yield sock.getsockname()[1]


@pytest.fixture
def silent_port() -> Iterator[int]:
    """A port that accepts connections and never answers: a hung server."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen(8)
        yield sock.getsockname()[1]


@dataclass
class RecordingSMTPHandler:
    messages: list[dict[str, Any]] = field(default_factory=list)

    async def handle_RCPT(self, server, session, envelope, address, rcpt_options) -> str:  # noqa: N802
        if address.startswith("nobody@"):
            return "550 No such user here"
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server, session, envelope) -> str:  # noqa: N802 (aiosmtpd's hook name)
        parsed = email.message_from_bytes(envelope.original_content, policy=email.policy.default)
        self.messages.append(
            {
                "mail_from": envelope.mail_from,
                "rcpt_tos": list(envelope.rcpt_tos),
                "message": parsed,
                "login": session.auth_data if session.authenticated else None,
            }
        )
        return "250 Message accepted for delivery"


class EphemeralPortController(Controller):
    """aiosmtpd's Controller on port 0: learn the port the OS chose before the start-up check connects.

    Controller.start() opens a test connection to `self.port`, which would still be 0.
    """

    def _trigger_server(self) -> None:
        self.port = self.server.sockets[0].getsockname()[1]
        super()._trigger_server()


def _check_password(server, session, envelope, mechanism, auth_data) -> AuthResult:
    ok = isinstance(auth_data, LoginPassword) and (auth_data.login, auth_data.password) == (
        SMTP_USER.encode(),
        SMTP_PASSWORD.encode(),
    )
    return AuthResult(success=ok, handled=False, auth_data=auth_data.login.decode() if ok else None)


@dataclass
class SMTPServer:
    handler: RecordingSMTPHandler
    port: int


@pytest.fixture
def start_smtp_server() -> Iterator[Callable[..., SMTPServer]]:
    controllers: list[Controller] = []

    def start(require_auth: bool = False) -> SMTPServer:
        handler = RecordingSMTPHandler()
        auth = {"authenticator": _check_password, "auth_required": True} if require_auth else {}
        # No TLS in the test: allow AUTH over plain SMTP (a real server would want STARTTLS).
        controller = EphemeralPortController(
            handler, hostname="127.0.0.1", port=0, ready_timeout=30, auth_require_tls=False, **auth
        )
        controller.start()
        controllers.append(controller)
        return SMTPServer(handler, controller.port)

    yield start
    for controller in controllers:
        controller.stop()


@pytest.fixture
def smtp_server(start_smtp_server) -> SMTPServer:
    return start_smtp_server()


@pytest.fixture
def log(caplog) -> logging.Logger:
    caplog.set_level(logging.INFO, logger="test")
    return logging.getLogger("test")


def messages_of(caplog) -> str:
    return "\n".join(record.getMessage() for record in caplog.records)


# ---------------------------------------------------------------- the notification itself


def test_text_reads_title_summary_fields_in_order_error_and_link():
    text = run_failure(error="ValueError: Input contains NaN.").text()
    assert text.splitlines()[:2] == [
        "Run failed: batch_pipeline for batch_0004",
        "Step train_random_forest failed: ValueError: Input contains NaN.",
    ]
    assert "run id: 4f6d2c1a\njob: batch_pipeline\npartition: batch_0004\nstep: train_rf" in text
    assert "Error:\nValueError: Input contains NaN." in text
    assert text.endswith(LINK)


def test_text_leaves_out_what_is_missing():
    text = Notification(title="Champion promoted", severity="info", summary="gb_0003 replaces rf_0001").text()
    assert text == "Champion promoted\ngb_0003 replaces rf_0001"


def test_long_error_keeps_its_first_ten_lines_and_ends_in_an_ellipsis():
    error = run_failure().error
    assert error is not None
    lines = error.splitlines()
    assert len(lines) == 10
    assert lines[0] == "Traceback (most recent call last):"
    assert lines[-1].endswith("line 8, in train…")


def test_one_huge_error_line_is_cut_to_2000_characters():
    error = run_failure(error="x" * 10_000).error
    assert error is not None
    assert len(error) == 2000
    assert error.endswith("…")


def test_short_error_is_kept_whole():
    assert run_failure(error="KeyError: 'target'").error == "KeyError: 'target'"


def test_unknown_severity_is_refused():
    with pytest.raises(ValueError, match="severity"):
        run_failure(severity="critical")


def test_as_json_carries_every_part_and_names_its_source():
    notification = run_failure(error="boom")
    assert notification.as_json() == {
        "source": "ml_platform",
        "title": "Run failed: batch_pipeline for batch_0004",
        "severity": "error",
        "summary": "Step train_random_forest failed: ValueError: Input contains NaN.",
        "fields": {"run id": "4f6d2c1a", "job": "batch_pipeline", "partition": "batch_0004", "step": "train_rf"},
        "error": "boom",
        "link": LINK,
    }
    json.dumps(notification.as_json())  # a webhook body: must serialize


# ---------------------------------------------------------------- channels against real servers


def test_slack_webhook_receives_title_and_link_in_text_and_in_blocks(http_server, log):
    channel = SlackWebhookChannel(http_server.url("/services/T000/B000/xyz"), timeout=5)
    status = send_notification(run_failure(), [channel], log)

    assert status == {"log": "sent", "slack": "sent"}
    [request] = http_server.received
    assert request["path"] == "/services/T000/B000/xyz"
    assert request["headers"]["Content-Type"] == "application/json"
    payload = request["json"]
    assert "Run failed: batch_pipeline for batch_0004" in payload["text"]
    assert LINK in payload["text"]
    header, *_ = payload["blocks"]
    assert header == {
        "type": "header",
        "text": {"type": "plain_text", "text": "Run failed: batch_pipeline for batch_0004"},
    }
    buttons = [element for block in payload["blocks"] if block["type"] == "actions" for element in block["elements"]]
    assert [button["url"] for button in buttons] == [LINK]


def test_slack_escapes_markup_in_errors(http_server, log):
    channel = SlackWebhookChannel(http_server.url("/hook"), timeout=5)
    send_notification(run_failure(error='File "<module>", line 1 & more'), [channel], log)
    [request] = http_server.received
    assert "&lt;module&gt;" in request["json"]["text"]
    assert "<module>" not in json.dumps(request["json"]["blocks"])


def test_json_webhook_receives_fields_first_error_lines_and_link(http_server, log):
    channel = JsonWebhookChannel(http_server.url("/ml-alerts"), timeout=5)
    status = send_notification(run_failure(), [channel], log)

    assert status == {"log": "sent", "webhook": "sent"}
    [request] = http_server.received
    body = request["json"]
    assert body["source"] == "ml_platform"
    assert body["severity"] == "error"
    assert body["fields"]["run id"] == "4f6d2c1a"
    assert body["fields"]["partition"] == "batch_0004"
    assert body["fields"]["step"] == "train_rf"
    assert body["error"].startswith("Traceback (most recent call last):\n")
    assert len(body["error"].splitlines()) == 10
    assert body["link"] == LINK


def test_email_arrives_with_subject_recipients_and_body(smtp_server, log):
    channel = EmailChannel(
        host="127.0.0.1",
        port=smtp_server.port,
        sender="ml-platform@example.com",
        recipients=["oncall@example.com", "ds-team@example.com"],
        timeout=5,
    )
    status = send_notification(run_failure(), [channel], log)

    assert status == {"log": "sent", "email": "sent"}
    [received] = smtp_server.handler.messages
    assert received["mail_from"] == "ml-platform@example.com"
    assert received["rcpt_tos"] == ["oncall@example.com", "ds-team@example.com"]
    message = received["message"]
    assert message["Subject"] == "[ml_platform] error: Run failed: batch_pipeline for batch_0004"
    assert message["To"] == "oncall@example.com, ds-team@example.com"
    body = message.get_body().get_content()
    assert "partition: batch_0004" in body
    assert "Traceback (most recent call last):" in body
    assert LINK in body


def test_email_logs_in_when_the_server_requires_it(start_smtp_server, log):
    server = start_smtp_server(require_auth=True)
    channel = EmailChannel("127.0.0.1", server.port, "ml@example.com", ["oncall@example.com"], timeout=5)
    with_login = EmailChannel(
        "127.0.0.1", server.port, "ml@example.com", ["oncall@example.com"], SMTP_USER, SMTP_PASSWORD, timeout=5
    )

    assert send_notification(run_failure(), [channel], log)["email"].startswith("failed: ")
    assert send_notification(run_failure(), [with_login], log)["email"] == "sent"
    [received] = server.handler.messages
    assert received["login"] == SMTP_USER


def test_a_recipient_the_server_refuses_makes_the_email_fail(smtp_server, log):
    # smtplib raises only when every recipient is refused; one lost recipient must not read "sent".
    recipients = ["oncall@example.com", "nobody@example.com"]
    channel = EmailChannel("127.0.0.1", smtp_server.port, "ml@example.com", recipients, timeout=5)
    status = send_notification(run_failure(), [channel], log)
    assert status["email"] == f"failed: SMTP 127.0.0.1:{smtp_server.port} refused nobody@example.com"
    assert [received["rcpt_tos"] for received in smtp_server.handler.messages] == [["oncall@example.com"]]


def test_a_title_with_a_line_break_still_makes_a_one_line_subject(smtp_server, log):
    channel = EmailChannel("127.0.0.1", smtp_server.port, "ml@example.com", ["oncall@example.com"], timeout=5)
    assert send_notification(run_failure(title="Run failed:\nbatch_pipeline"), [channel], log)["email"] == "sent"
    [received] = smtp_server.handler.messages
    assert received["message"]["Subject"] == "[ml_platform] error: Run failed: batch_pipeline"


# ---------------------------------------------------------------- the log, and failures


@pytest.mark.parametrize(
    ("severity", "level"), [("error", logging.ERROR), ("warning", logging.WARNING), ("info", logging.INFO)]
)
def test_the_log_gets_every_notification_at_its_severity(severity, level, log, caplog):
    status = send_notification(run_failure(severity=severity), [], log)
    assert status == {"log": "sent"}
    [record] = caplog.records
    assert record.levelno == level
    assert record.getMessage() == run_failure().text()


def test_failing_channels_are_reported_and_the_others_still_deliver(
    start_http_server, closed_port, smtp_server, log, caplog
):
    failing_server = start_http_server(500)
    channels = [
        SlackWebhookChannel(f"http://127.0.0.1:{closed_port}/services/T000", timeout=5),
        JsonWebhookChannel(failing_server.url("/ml-alerts"), timeout=5),
        EmailChannel("127.0.0.1", smtp_server.port, "ml@example.com", ["oncall@example.com"], timeout=5),
    ]
    status = send_notification(run_failure(), channels, log)

    assert status["log"] == "sent"
    assert status["slack"] == f"failed: ConnectionError (Connection refused) posting to http://127.0.0.1:{closed_port}"
    assert status["webhook"] == f"failed: http://127.0.0.1:{failing_server.server_address[1]} answered HTTP 500"
    assert status["email"] == "sent"
    assert len(failing_server.received) == 3  # tried, then retried twice
    assert len(smtp_server.handler.messages) == 1
    warnings = [record.getMessage() for record in caplog.records if record.levelno == logging.WARNING]
    assert warnings == [
        f"Notification channel 'slack' failed: {status['slack'].removeprefix('failed: ')}",
        f"Notification channel 'webhook' failed: {status['webhook'].removeprefix('failed: ')}",
    ]


def test_an_smtp_server_that_is_down_is_reported(closed_port, http_server, log):
    channels = [
        EmailChannel("127.0.0.1", closed_port, "ml@example.com", ["oncall@example.com"], timeout=5),
        JsonWebhookChannel(http_server.url("/ml-alerts"), timeout=5),
    ]
    status = send_notification(run_failure(), channels, log)
    assert status["email"].startswith(f"failed: SMTP 127.0.0.1:{closed_port}: ConnectionRefusedError")
    assert status["webhook"] == "sent"


def test_a_hung_server_fails_after_the_timeout_instead_of_blocking(silent_port, log):
    channel = JsonWebhookChannel(f"http://127.0.0.1:{silent_port}/ml-alerts", timeout=0.3)
    status = send_notification(run_failure(), [channel], log)
    assert status["webhook"] == f"failed: ReadTimeout posting to http://127.0.0.1:{silent_port}"


def test_a_channel_that_breaks_unexpectedly_does_not_stop_the_others(http_server, log, caplog):
    class BrokenChannel:
        name = "pager"

        def send(self, notification: Notification) -> None:
            raise RuntimeError(f"bug while posting to https://pager.example.com/{TOKEN}")

    channels = [BrokenChannel(), JsonWebhookChannel(http_server.url("/ml-alerts"), timeout=5)]
    status = send_notification(run_failure(), channels, log)
    assert status == {"log": "sent", "pager": "failed: unexpected RuntimeError", "webhook": "sent"}
    assert TOKEN not in messages_of(caplog)


# ---------------------------------------------------------------- secrets


def test_webhook_tokens_never_reach_the_log_or_the_status(start_http_server, closed_port, silent_port, log, caplog):
    failing_server = start_http_server(500)
    channels = [
        SlackWebhookChannel(f"http://127.0.0.1:{closed_port}/hooks/T000/{TOKEN}", timeout=5),
        JsonWebhookChannel(failing_server.url(f"/hooks/T000/{TOKEN}?key={TOKEN}"), timeout=5),
        JsonWebhookChannel(f"http://user:{TOKEN}@127.0.0.1:{silent_port}/hooks/{TOKEN}", timeout=0.3),
    ]
    status = send_notification(run_failure(), channels, log)

    assert status.keys() == {"log", "slack", "webhook", "webhook#2"}
    assert all(value.startswith("failed: ") for name, value in status.items() if name != "log")
    assert len(caplog.records) == 1 + 3  # the notification, then one warning per failed channel
    assert TOKEN not in messages_of(caplog)
    assert TOKEN not in json.dumps(status)
    assert all(TOKEN not in repr(channel) for channel in channels)


def test_the_smtp_password_never_reaches_the_log_or_the_status(start_smtp_server, log, caplog):
    server = start_smtp_server(require_auth=True)
    wrong = "n0t-the-pa55w0rd"
    channel = EmailChannel("127.0.0.1", server.port, "ml@example.com", ["oncall@example.com"], SMTP_USER, wrong)
    status = send_notification(run_failure(), [channel], log)

    assert status["email"].startswith("failed: SMTP 127.0.0.1:")
    assert "SMTPAuthenticationError" in status["email"]
    assert wrong not in messages_of(caplog)
    assert wrong not in json.dumps(status)
    assert wrong not in repr(channel)
    assert server.handler.messages == []


# ---------------------------------------------------------------- the resource, from the platform config


def notifications_config(**channels: Any) -> NotificationsConfig:
    return NotificationsConfig.model_validate(
        {"channels": channels, "dagster_ui_url": "http://dagster.internal:3000/", "timeout_seconds": 5}
    )


def test_notifier_from_config_takes_secrets_from_the_environment_and_delivers(
    http_server, start_smtp_server, monkeypatch, log
):
    smtp = start_smtp_server(require_auth=True)
    monkeypatch.setenv("TEST_SLACK_URL", http_server.url(f"/services/T000/{TOKEN}"))
    monkeypatch.setenv("TEST_WEBHOOK_URL", http_server.url("/ml-alerts"))
    monkeypatch.setenv("TEST_SMTP_USER", SMTP_USER)
    monkeypatch.setenv("TEST_SMTP_PASSWORD", SMTP_PASSWORD)
    config = notifications_config(
        slack_webhook_url_env="TEST_SLACK_URL",
        webhook_url_env="TEST_WEBHOOK_URL",
        email={
            "smtp_host": "127.0.0.1",
            "smtp_port": smtp.port,
            "sender": "ml@example.com",
            "recipients": ["oncall@example.com"],
            "username_env": "TEST_SMTP_USER",
            "password_env": "TEST_SMTP_PASSWORD",
        },
    )
    notifier = notifier_from_config(config)

    # Dagster records the variables' names, and shows those in the UI, not the secrets.
    assert isinstance(notifier.slack_webhook_url, dg.EnvVar)
    assert notifier.slack_webhook_url == "TEST_SLACK_URL"
    assert notifier.smtp_password == "TEST_SMTP_PASSWORD"
    assert TOKEN not in repr(notifier.process_config_and_initialize())
    assert SMTP_PASSWORD not in repr(notifier.process_config_and_initialize())

    notification = run_failure(link=notifier.run_url("4f6d2c1a"))
    status = notifier.notify(notification, log)

    assert status == {"log": "sent", "slack": "sent", "webhook": "sent", "email": "sent"}
    bodies = {request["path"]: request["json"] for request in http_server.received}
    assert bodies.keys() == {"/ml-alerts", f"/services/T000/{TOKEN}"}
    assert "http://dagster.internal:3000/runs/4f6d2c1a" in bodies[f"/services/T000/{TOKEN}"]["text"]
    assert bodies["/ml-alerts"]["link"] == "http://dagster.internal:3000/runs/4f6d2c1a"
    [received] = smtp.handler.messages
    assert received["login"] == SMTP_USER
    assert "http://dagster.internal:3000/runs/4f6d2c1a" in received["message"].get_body().get_content()


def test_a_channel_whose_variable_is_unset_is_left_out(monkeypatch, caplog):
    for name in ("TEST_SLACK_URL", "TEST_WEBHOOK_URL", "TEST_SMTP_USER", "TEST_SMTP_PASSWORD"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("TEST_WEBHOOK_URL", "")  # set but empty counts as unset
    config = notifications_config(
        slack_webhook_url_env="TEST_SLACK_URL",
        webhook_url_env="TEST_WEBHOOK_URL",
        email={
            "smtp_host": "127.0.0.1",
            "sender": "ml@example.com",
            "recipients": ["oncall@example.com"],
            "username_env": "TEST_SMTP_USER",
            "password_env": "TEST_SMTP_PASSWORD",
        },
    )
    notifier = notifier_from_config(config).process_config_and_initialize()

    [email_channel] = notifier.channels()
    assert isinstance(email_channel, EmailChannel)
    assert (email_channel.username, email_channel.password) == (None, None)
    warned = messages_of(caplog)
    for name in ("TEST_SLACK_URL", "TEST_WEBHOOK_URL", "TEST_SMTP_USER", "TEST_SMTP_PASSWORD"):
        assert name in warned


def test_a_plain_webhook_url_is_passed_as_is():
    notifier = notifier_from_config(notifications_config(webhook_url="http://127.0.0.1:9/ml-alerts"))
    assert notifier.webhook_url == "http://127.0.0.1:9/ml-alerts"
    assert [channel.name for channel in notifier.channels()] == ["webhook"]


def test_no_channels_configured_means_the_log_only(log):
    notifier = notifier_from_config(NotificationsConfig())
    assert notifier.channels() == []
    assert notifier.notify(run_failure(), log) == {"log": "sent"}


def test_run_url_points_at_the_run_in_the_dagster_ui():
    assert NotifierResource().run_url("4f6d2c1a") == "http://127.0.0.1:3000/runs/4f6d2c1a"
    assert NotifierResource(dagster_ui_url="https://dagster.example.com/").run_url("r1") == (
        "https://dagster.example.com/runs/r1"
    )


def test_a_resource_used_directly_reads_its_env_var_not_the_variable_name(http_server, monkeypatch, log):
    monkeypatch.setenv("TEST_WEBHOOK_URL", http_server.url("/ml-alerts"))
    notifier = NotifierResource(webhook_url=dg.EnvVar("TEST_WEBHOOK_URL"))
    assert notifier.notify(run_failure(), log) == {"log": "sent", "webhook": "sent"}
    assert [request["path"] for request in http_server.received] == ["/ml-alerts"]


def test_half_an_email_setup_is_an_error_not_silence():
    with pytest.raises(ValueError, match="email_recipients"):
        NotifierResource(smtp_host="127.0.0.1", email_sender="ml@example.com").channels()


def test_a_webhook_that_hiccups_gets_the_message_on_a_retry(start_http_server, log):
    server = start_http_server(200, first=(503,))
    status = send_notification(run_failure(), [JsonWebhookChannel(server.url("/hook"))], log)
    assert status["webhook"] == "sent"
    assert len(server.received) == 2  # refused once with 503, delivered on the retry
