"""Where notifications go: the log always, plus Slack, a JSON webhook and email when configured.

Secrets (webhook URLs with their tokens, the SMTP login) reach the resource through `dg.EnvVar`,
so the Dagster UI shows the variable's name, never its value. The sending itself is in
`ml_platform.lib.notifications`, the outbox that keeps what a channel could not take in
`ml_platform.lib.outbox`: it holds channel names, and the channels are built here, from the
environment, each time something is sent.
"""

import logging
import os
from pathlib import Path
from typing import Any

import dagster as dg
from pydantic import Field

from ml_platform.lib.config import NotificationsConfig
from ml_platform.lib.notifications import (
    Channel,
    EmailChannel,
    FlushResult,
    JsonWebhookChannel,
    Notification,
    SlackWebhookChannel,
    channels_by_key,
    flush_outbox,
    send_notification,
)
from ml_platform.lib.outbox import Outbox

# Under ML_PLATFORM_HOME.
OUTBOX_PATH = Path("notifications") / "outbox.json"

_log = logging.getLogger(__name__)


class NotifierResource(dg.ConfigurableResource):
    """Give URLs with tokens and the SMTP password as `dg.EnvVar`: a plain string shows in the UI."""

    # repr=False: a resource printed in a log or a traceback must not show a token.
    slack_webhook_url: str | None = Field(default=None, repr=False)
    webhook_url: str | None = Field(default=None, repr=False)
    smtp_host: str | None = None
    smtp_port: int = 25
    email_sender: str | None = None
    email_recipients: list[str] = []
    smtp_starttls: bool = False
    smtp_username: str | None = None
    smtp_password: str | None = Field(default=None, repr=False)
    dagster_ui_url: str = "http://127.0.0.1:3000"
    timeout_seconds: float = 10.0
    # Where undelivered messages wait (`lib/outbox.py`); None: a failed channel's message is only logged.
    outbox_path: str | None = None
    outbox_max_messages: int = 100
    outbox_max_age_hours: float = 72.0

    def channels(self) -> list[Channel]:
        """The channels besides the log; an empty URL (a variable set to "") counts as not configured."""
        resource = self._resolved()
        channels: list[Channel] = []
        if resource.slack_webhook_url:
            channels.append(SlackWebhookChannel(resource.slack_webhook_url, resource.timeout_seconds))
        if resource.webhook_url:
            channels.append(JsonWebhookChannel(resource.webhook_url, resource.timeout_seconds))
        email = {
            "smtp_host": resource.smtp_host,
            "email_sender": resource.email_sender,
            "email_recipients": resource.email_recipients,
        }
        if all(email.values()):
            channels.append(
                EmailChannel(
                    host=resource.smtp_host,
                    port=resource.smtp_port,
                    sender=resource.email_sender,
                    recipients=resource.email_recipients,
                    username=resource.smtp_username or None,
                    password=resource.smtp_password or None,
                    starttls=resource.smtp_starttls,
                    timeout=resource.timeout_seconds,
                )
            )
        elif any(email.values()):
            # Half an email setup would otherwise drop every email without a word.
            missing = ", ".join(name for name, value in email.items() if not value)
            raise ValueError(
                f"email notifications need smtp_host, email_sender and email_recipients; missing {missing}"
            )
        return channels

    def notify(self, notification: Notification, logger: logging.Logger) -> dict[str, str]:
        """Log `notification` and send it everywhere configured (what the outbox holds first);
        `{channel: "sent" | "queued: <reason>" | "failed: <reason>"}`."""
        return send_notification(notification, self.channels(), logger, self.outbox())

    def flush_outbox(self, logger: logging.Logger) -> FlushResult:
        """Send what the outbox holds to the channels that answer again."""
        outbox = self.outbox()
        if outbox is None:
            return FlushResult()
        return flush_outbox(outbox, channels_by_key(self.channels()), logger)

    def outbox(self) -> Outbox | None:
        if self.outbox_path is None:
            return None
        return Outbox(Path(self.outbox_path), self.outbox_max_messages, self.outbox_max_age_hours * 3600)

    def _resolved(self) -> "NotifierResource":
        """This resource with its `dg.EnvVar`s read.

        Dagster hands assets a resolved one; a resource built and called directly (a script, a
        test) still holds the EnvVar, whose text is the variable's name, and would post to a URL
        called "SLACK_WEBHOOK_URL".
        """
        fields = (self.slack_webhook_url, self.webhook_url, self.smtp_username, self.smtp_password)
        if any(isinstance(value, dg.EnvVar) for value in fields):
            return self.process_config_and_initialize()
        return self

    def run_url(self, run_id: str) -> str:
        return f"{self.dagster_ui_url.rstrip('/')}/runs/{run_id}"


def _env_var(name: str | None, what: str) -> dg.EnvVar | None:
    """`dg.EnvVar(name)` when the variable is set, else None (and a warning): that channel stays off.

    Dagster raises at resource initialization on an unset EnvVar, which would break every run
    for want of, say, a Slack URL. Only the variable's presence is read here; its value, the
    secret, is read by Dagster and never seen by this module.
    """
    if name is None:
        return None
    if not os.environ.get(name):
        _log.warning(f"Environment variable {name} is not set: the {what} it configures is left out")
        return None
    return dg.EnvVar(name)


def notifier_from_config(notifications: NotificationsConfig, home: Path | None = None) -> NotifierResource:
    """The notifier the platform config describes, with secrets read from the environment by Dagster,
    keeping undelivered messages in the outbox under `home` (where the pipeline writes) when given."""
    channels = notifications.channels
    email = channels.email
    settings: dict[str, Any] = {
        "slack_webhook_url": _env_var(channels.slack_webhook_url_env, "Slack channel"),
        "webhook_url": channels.webhook_url or _env_var(channels.webhook_url_env, "webhook channel"),
        "dagster_ui_url": notifications.dagster_ui_url,
        "timeout_seconds": notifications.timeout_seconds,
        "outbox_path": str(Path(home) / OUTBOX_PATH) if home is not None else None,
        "outbox_max_messages": notifications.outbox.max_messages,
        "outbox_max_age_hours": notifications.outbox.max_age_hours,
    }
    if email is not None:
        settings |= {
            "smtp_host": email.smtp_host,
            "smtp_port": email.smtp_port,
            "email_sender": email.sender,
            "email_recipients": list(email.recipients),
            "smtp_starttls": email.starttls,
            "smtp_username": _env_var(email.username_env, "SMTP username"),
            "smtp_password": _env_var(email.password_env, "SMTP password"),
        }
    return NotifierResource(**settings)
