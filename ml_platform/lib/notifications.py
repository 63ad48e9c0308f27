"""Notifications about runs and models, and the channels that carry them: Slack, a JSON webhook, email.

A `Notification` is what a person needs to act on an event: what happened, on which run, job,
partition and step, the first lines of the error and a link to the run in the Dagster UI.
`send_notification` always writes it to the log, then tries every configured channel; a channel
that fails is reported and never stops the others, so one dead SMTP server cannot silence Slack.

Webhook URLs carry their token in the path and SMTP passwords are secrets, so nothing here puts
a URL's path, its query or a password into a log line, an exception message or a status.
"""

from __future__ import annotations

import logging
import smtplib
import ssl
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from email.message import EmailMessage
from typing import Any, Literal, Protocol
from urllib.parse import urlsplit

import requests

Severity = Literal["error", "warning", "info"]
SEVERITIES: tuple[Severity, ...] = ("error", "warning", "info")

# Enough of a traceback to recognise the failure; the whole of it is one click away in the UI.
MAX_ERROR_LINES = 10
MAX_ERROR_CHARS = 2000
ELLIPSIS = "…"


def first_lines(text: str, max_lines: int = MAX_ERROR_LINES, max_chars: int = MAX_ERROR_CHARS) -> str:
    """The first `max_lines` lines of `text`, at most `max_chars` long, ending in an ellipsis when cut."""
    lines = text.strip().splitlines()
    kept = "\n".join(lines[:max_lines])
    cut = len(lines) > max_lines
    if len(kept) > max_chars - len(ELLIPSIS):
        kept = kept[: max_chars - len(ELLIPSIS)]
        cut = True
    return f"{kept.rstrip()}{ELLIPSIS}" if cut else kept


@dataclass(frozen=True)
class Notification:
    title: str  # "Run failed: batch_pipeline for batch_0004"
    severity: Severity
    summary: str  # what failed or what happened, in a line or two
    fields: dict[str, str] = field(default_factory=dict)  # run id, job, partition, step…, shown in this order
    error: str | None = None  # shortened to its first lines on construction
    link: str | None = None  # the run in the Dagster UI

    def __post_init__(self) -> None:
        # The log call and the Slack icon are chosen by severity: an unknown one must fail here, not there.
        if self.severity not in SEVERITIES:
            raise ValueError(f"severity must be one of {SEVERITIES}, got {self.severity!r}")
        if self.error is not None:
            object.__setattr__(self, "error", first_lines(self.error))

    def text(self) -> str:
        """Plain text: title, summary, `key: value` lines, the error, the link."""
        parts = [f"{self.title}\n{self.summary}"]
        if self.fields:
            parts.append("\n".join(f"{key}: {value}" for key, value in self.fields.items()))
        if self.error:
            parts.append(f"Error:\n{self.error}")
        if self.link:
            parts.append(f"Open in Dagster: {self.link}")
        return "\n\n".join(parts)

    def as_json(self) -> dict[str, Any]:
        return {
            "source": "ml_platform",
            "title": self.title,
            "severity": self.severity,
            "summary": self.summary,
            "fields": dict(self.fields),
            "error": self.error,
            "link": self.link,
        }


class ChannelError(Exception):
    """A channel could not deliver. The message is safe to log: it never holds a token or a password."""


class Channel(Protocol):
    name: str

    def send(self, notification: Notification) -> None:
        """Deliver `notification`, or raise."""


def redact_url(url: str) -> str:
    """Only the scheme, host and port of `url`: its user info, path and query may hold a token."""
    try:
        parts = urlsplit(url)
        port = f":{parts.port}" if parts.port else ""
    except ValueError:  # a malformed port: say nothing about the URL rather than risk quoting it
        return "<unparseable url>"
    if not parts.hostname:
        return "<url without host>"
    host = f"[{parts.hostname}]" if ":" in parts.hostname else parts.hostname  # IPv6
    return f"{parts.scheme}://{host}{port}"


_OS_ERROR_MODULES = {"builtins", "socket", "ssl"}


def _os_reason(error: BaseException) -> str | None:
    """The operating system's reason ("Connection refused") found in an exception's causes, if any.

    requests and urllib3 wrap the socket error several times, each wrapper quoting the URL; only the
    innermost OS error carries a reason with no URL in it.
    """
    seen: set[int] = set()
    pending: list[Any] = [error]
    while pending:
        current = pending.pop()
        if not isinstance(current, BaseException) or id(current) in seen:
            continue
        seen.add(id(current))
        # Only errors raised by the socket layer: a library's OSError subclass may carry the URL as strerror.
        if isinstance(current, OSError) and current.strerror and type(current).__module__ in _OS_ERROR_MODULES:
            return current.strerror
        pending.extend([current.__cause__, current.__context__, getattr(current, "reason", None), *current.args])
    return None


# A webhook that hiccups (refused while restarting, 5xx or 429 under load) gets two more tries, 0.5 s
# and 1 s later. Not after a read timeout: the server may have taken the message, and twice is worse.
# (urllib3's own Retry would do this too, but it logs each retry with the URL's path: the token.)
RETRY_DELAYS_SECONDS = (0.5, 1.0)
RETRY_STATUSES = frozenset({429, 500, 502, 503, 504})


def _post_json(url: str, payload: dict[str, Any], timeout: float) -> None:
    where = redact_url(url)
    for retry_delay in (*RETRY_DELAYS_SECONDS, None):
        try:
            response = requests.post(url, json=payload, timeout=timeout)
        except requests.RequestException as error:
            if isinstance(error, requests.ConnectionError) and retry_delay is not None:
                time.sleep(retry_delay)
                continue
            # str(error) quotes the full URL, token included: report the class and the OS reason only.
            reason = _os_reason(error)
            detail = f" ({reason})" if reason else ""
            raise ChannelError(f"{type(error).__name__}{detail} posting to {where}") from None
        if response.status_code in RETRY_STATUSES and retry_delay is not None:
            time.sleep(retry_delay)
            continue
        if not 200 <= response.status_code < 300:
            # The body is left out: some servers echo the requested path, and with it the token.
            raise ChannelError(f"{where} answered HTTP {response.status_code}")
        return


SLACK_ICONS: dict[str, str] = {"error": ":red_circle:", "warning": ":warning:", "info": ":information_source:"}
SLACK_FIELDS_PER_SECTION = 10  # Slack's limit for a section's fields
SLACK_HEADER_CHARS = 150  # Slack's limit for a header's text


def _slack_escape(text: str) -> str:
    """Slack reads `<`, `>` and `&` as markup; errors are full of them (`<module>`)."""
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def slack_payload(notification: Notification) -> dict[str, Any]:
    """A Slack incoming-webhook message: blocks for Slack, and the whole text in `text`.

    `text` is what Slack shows in push notifications, and all that Slack-compatible servers
    (Mattermost, Rocket.Chat) read, so it carries everything, link included.
    """
    header = notification.title
    if len(header) > SLACK_HEADER_CHARS:
        header = header[: SLACK_HEADER_CHARS - len(ELLIPSIS)] + ELLIPSIS
    blocks: list[dict[str, Any]] = [
        {"type": "header", "text": {"type": "plain_text", "text": header}},
        {
            "type": "section",
            "text": {
                "type": "mrkdwn",
                "text": f"{SLACK_ICONS[notification.severity]} {_slack_escape(notification.summary)}",
            },
        },
    ]
    items = list(notification.fields.items())
    for start in range(0, len(items), SLACK_FIELDS_PER_SECTION):
        chunk = items[start : start + SLACK_FIELDS_PER_SECTION]
        blocks.append(
            {
                "type": "section",
                "fields": [
                    {"type": "mrkdwn", "text": f"*{_slack_escape(key)}*\n{_slack_escape(value)}"}
                    for key, value in chunk
                ],
            }
        )
    if notification.error:
        blocks.append(
            {"type": "section", "text": {"type": "mrkdwn", "text": f"```{_slack_escape(notification.error)}```"}}
        )
    if notification.link:
        blocks.append(
            {
                "type": "actions",
                "elements": [
                    {
                        "type": "button",
                        "text": {"type": "plain_text", "text": "Open in Dagster"},
                        "url": notification.link,
                    }
                ],
            }
        )
    return {"text": _slack_escape(notification.text()), "blocks": blocks}


@dataclass(frozen=True)
class SlackWebhookChannel:
    url: str = field(repr=False)  # the token is in the path
    timeout: float = 10.0
    name: str = field(default="slack", init=False)

    def send(self, notification: Notification) -> None:
        _post_json(self.url, slack_payload(notification), self.timeout)


@dataclass(frozen=True)
class JsonWebhookChannel:
    url: str = field(repr=False)  # may carry a token
    timeout: float = 10.0
    name: str = field(default="webhook", init=False)

    def send(self, notification: Notification) -> None:
        _post_json(self.url, notification.as_json(), self.timeout)


def email_message(notification: Notification, sender: str, recipients: Sequence[str]) -> EmailMessage:
    message = EmailMessage()
    # A line break in a header would be refused by EmailMessage (header injection): fold it into spaces.
    subject = " ".join(f"[ml_platform] {notification.severity}: {notification.title}".split())
    message["Subject"] = subject
    message["From"] = sender
    message["To"] = ", ".join(recipients)
    message.set_content(notification.text())
    return message


@dataclass(frozen=True)
class EmailChannel:
    host: str
    port: int
    sender: str
    recipients: Sequence[str]
    username: str | None = None
    password: str | None = field(default=None, repr=False)
    starttls: bool = False
    timeout: float = 10.0
    name: str = field(default="email", init=False)

    def __post_init__(self) -> None:
        if not self.recipients:
            raise ValueError("an email channel needs at least one recipient")
        object.__setattr__(self, "recipients", tuple(self.recipients))

    def send(self, notification: Notification) -> None:
        message = email_message(notification, self.sender, self.recipients)
        try:
            with smtplib.SMTP(self.host, self.port, timeout=self.timeout) as smtp:
                if self.starttls:
                    smtp.starttls(context=ssl.create_default_context())
                if self.username is not None:
                    smtp.login(self.username, self.password or "")
                refused = smtp.send_message(message)
        except (smtplib.SMTPException, OSError) as error:
            raise ChannelError(f"{self._where()}: {self._scrub(f'{type(error).__name__}: {error}')}") from None
        # smtplib raises only when every recipient is refused; a partial delivery is still a failure.
        if refused:
            raise ChannelError(f"{self._where()} refused {', '.join(sorted(refused))}")

    def _where(self) -> str:
        return f"SMTP {self.host}:{self.port}"

    def _scrub(self, text: str) -> str:
        """Servers have no reason to echo the password, but a message that did must not reach a log."""
        return text.replace(self.password, "<redacted>") if self.password else text


def _log_at_severity(logger: logging.Logger, notification: Notification) -> None:
    log = {"error": logger.error, "warning": logger.warning}.get(notification.severity, logger.info)
    log(notification.text())


def send_notification(
    notification: Notification, channels: Iterable[Channel], logger: logging.Logger
) -> dict[str, str]:
    """Log `notification`, then send it to every channel; `{channel: "sent" | "failed: <reason>"}`.

    The log comes first and cannot be configured away, so a notification is never lost even when
    every channel is down. A failing channel is logged as a warning and the others still get it.
    """
    _log_at_severity(logger, notification)
    status = {"log": "sent"}
    for channel in channels:
        key = _unique_key(channel.name, status)
        try:
            channel.send(notification)
        except ChannelError as error:
            reason = str(error)
        except Exception as error:  # a bug in a channel must not silence the others either
            # Only the class: an unexpected exception's message was not written to be safe to log.
            reason = f"unexpected {type(error).__name__}"
        else:
            status[key] = "sent"
            continue
        logger.warning(f"Notification channel {key!r} failed: {reason}")
        status[key] = f"failed: {reason}"
    return status


def _unique_key(name: str, status: dict[str, str]) -> str:
    """`name`, or `name#2`, `name#3`… for a second channel of the same kind, so no outcome is overwritten."""
    key, number = name, 2
    while key in status:
        key, number = f"{name}#{number}", number + 1
    return key
