"""Notifications about runs and models, and the channels that carry them: Slack, a JSON webhook, email.

A `Notification` is what a person needs to act on an event: what happened, on which run, job,
partition and step, the first lines of the error and a link to the run in the Dagster UI.
`send_notification` always writes it to the log, then tries every configured channel; a channel
that fails is reported and never stops the others, so one dead SMTP server cannot silence Slack.
A failure a retry can fix (refused, 5xx, 429, an SMTP 4xx) is kept in the outbox (`lib/outbox.py`)
and sent when the channel answers again; one no retry can fix (a 404, a wrong SMTP password) or one
after which the message may have arrived (a read timeout) is reported and not kept: at most once.

Webhook URLs carry their token in the path and SMTP passwords are secrets, so nothing here puts
a URL's path, its query or a password into a log line, an exception message or a status.
"""

from __future__ import annotations

import contextlib
import logging
import smtplib
import ssl
import time
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from email.message import EmailMessage
from typing import TYPE_CHECKING, Any, Literal, Protocol
from urllib.parse import urlsplit

import requests
import urllib3

if TYPE_CHECKING:
    from ml_platform.lib.outbox import Outbox

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

    @classmethod
    def from_json(cls, raw: dict[str, Any]) -> Notification:
        """The inverse of `as_json`, for notifications read back from the outbox."""
        return cls(
            title=raw["title"],
            severity=raw["severity"],
            summary=raw["summary"],
            fields=dict(raw.get("fields") or {}),
            error=raw.get("error"),
            link=raw.get("link"),
        )


class ChannelError(Exception):
    """A channel could not deliver. The message is safe to log: it never holds a token or a password.

    `transient`: the channel did not take the message and may take it later (refused, 5xx, 429, an
    SMTP 4xx), so sending it again can neither fail the same way for sure nor deliver it twice.
    """

    def __init__(self, message: str, transient: bool = False) -> None:
        super().__init__(message)
        self.transient = transient


class Channel(Protocol):
    name: str

    def send(self, notification: Notification) -> None:
        """Deliver `notification`, or raise (a `ChannelError` says whether a retry can fix it)."""


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
    for current in _causes(error, follow_context=True):
        # Only errors raised by the socket layer: a library's OSError subclass may carry the URL as strerror.
        if isinstance(current, OSError) and current.strerror and type(current).__module__ in _OS_ERROR_MODULES:
            return current.strerror
    return None


def _causes(error: BaseException, follow_context: bool) -> Iterator[BaseException]:
    """`error` and every exception it wraps (causes, `reason` attributes, exception arguments), once each;
    with `follow_context`, also the exceptions being handled when each was raised."""
    seen: set[int] = set()
    pending: list[Any] = [error]
    while pending:
        current = pending.pop()
        if not isinstance(current, BaseException) or id(current) in seen:
            continue
        seen.add(id(current))
        yield current
        context = [current.__context__] if follow_context else []
        pending.extend([current.__cause__, *context, getattr(current, "reason", None), *current.args])


# A webhook that hiccups (refused while restarting, 5xx or 429 under load) gets two more tries, 0.5 s
# and 1 s later, then the outbox keeps the message. Never after a read timeout or a connection that
# broke mid-request: the server may have taken the message, and twice is worse than late.
# (urllib3's own Retry would do this too, but it logs each retry with the URL's path: the token.)
RETRY_DELAYS_SECONDS = (0.5, 1.0)
RETRY_STATUSES = frozenset({429, 500, 502, 503, 504})


def _never_sent(error: BaseException) -> bool:
    """Whether a request failed before any byte reached a server: refused, unknown host, connect timeout.

    requests wraps urllib3's connect errors (`NewConnectionError`, `NameResolutionError`,
    `ConnectTimeoutError`) in a `MaxRetryError` in a `ConnectionError`; a connection that broke
    after the request went out (`ProtocolError`) is not one of them.
    """
    if isinstance(error, requests.ConnectTimeout):
        return True
    return any(
        isinstance(current, urllib3.exceptions.ConnectTimeoutError) for current in _causes(error, follow_context=False)
    )


def _post_json(url: str, payload: dict[str, Any], timeout: float) -> None:
    where = redact_url(url)
    for retry_delay in (*RETRY_DELAYS_SECONDS, None):
        try:
            response = requests.post(url, json=payload, timeout=timeout)
        except requests.RequestException as error:
            transient = _never_sent(error)
            if transient and retry_delay is not None:
                time.sleep(retry_delay)
                continue
            # str(error) quotes the full URL, token included: report the class and the OS reason only.
            reason = _os_reason(error)
            detail = f" ({reason})" if reason else ""
            raise ChannelError(f"{type(error).__name__}{detail} posting to {where}", transient) from None
        if response.status_code in RETRY_STATUSES and retry_delay is not None:
            time.sleep(retry_delay)
            continue
        if not 200 <= response.status_code < 300:
            # The body is left out: some servers echo the requested path, and with it the token.
            raise ChannelError(
                f"{where} answered HTTP {response.status_code}", transient=response.status_code in RETRY_STATUSES
            )
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
        """Deliver by SMTP. Transient: no connection, or the server's own 4xx ("try again later").
        Not transient: a 5xx, a refused login, some recipients refused (the others have it), or a
        connection lost while the message was going out (it may have arrived)."""
        message = email_message(notification, self.sender, self.recipients)
        try:
            smtp = smtplib.SMTP(self.host, self.port, timeout=self.timeout)
        except (smtplib.SMTPException, OSError) as error:
            raise self._error(error, transient=True) from None
        try:
            try:
                if self.starttls:
                    smtp.starttls(context=ssl.create_default_context())
                if self.username is not None:
                    smtp.login(self.username, self.password or "")
            except smtplib.SMTPResponseException as error:
                raise self._error(error, transient=400 <= error.smtp_code < 500) from None
            except (smtplib.SMTPException, OSError) as error:  # nothing was sent yet
                raise self._error(error, transient=True) from None
            try:
                refused = smtp.send_message(message)
            except smtplib.SMTPRecipientsRefused as error:  # every recipient refused: nobody has it
                codes = [code for code, _ in error.recipients.values()]
                raise self._error(error, transient=all(400 <= code < 500 for code in codes)) from None
            except smtplib.SMTPResponseException as error:  # the sender or the data refused: not delivered
                raise self._error(error, transient=400 <= error.smtp_code < 500) from None
            except (smtplib.SMTPException, OSError) as error:
                raise self._error(error, transient=False) from None
        finally:
            with contextlib.suppress(smtplib.SMTPException, OSError):  # the message is already handed over
                smtp.quit()
            smtp.close()
        # smtplib raises only when every recipient is refused; a partial delivery is still a failure.
        if refused:
            raise ChannelError(f"{self._where()} refused {', '.join(sorted(refused))}")

    def _error(self, error: BaseException, transient: bool) -> ChannelError:
        return ChannelError(f"{self._where()}: {self._scrub(f'{type(error).__name__}: {error}')}", transient)

    def _where(self) -> str:
        return f"SMTP {self.host}:{self.port}"

    def _scrub(self, text: str) -> str:
        """Servers have no reason to echo the password, but a message that did must not reach a log."""
        return text.replace(self.password, "<redacted>") if self.password else text


def _log_at_severity(logger: logging.Logger, notification: Notification) -> None:
    log = {"error": logger.error, "warning": logger.warning}.get(notification.severity, logger.info)
    log(notification.text())


def send_notification(
    notification: Notification, channels: Iterable[Channel], logger: logging.Logger, outbox: Outbox | None = None
) -> dict[str, str]:
    """Log `notification`, then send it to every channel; `{channel: "sent" | "queued: …" | "failed: …"}`.

    The log comes first and cannot be configured away, so a notification is never lost even when
    every channel is down. A failing channel is logged as a warning and the others still get it.
    With an `outbox`, what it holds is sent first (oldest first), and a channel that fails in a way
    a retry can fix keeps this message there ("queued") for the next send or flush.
    """
    _log_at_severity(logger, notification)
    named = channels_by_key(channels)
    down: dict[str, str] = {}
    if outbox is not None:
        try:
            down = flush_outbox(outbox, named, logger).down
        except Exception as error:  # an outbox that cannot be read or locked must not stop this message
            logger.warning(f"Notification outbox {outbox.path} unavailable: {type(error).__name__}: {error}")
    status = {"log": "sent"}
    keep: dict[str, str] = {}
    for key, channel in named.items():
        if key in down:  # it just failed on an older message: this one waits behind it
            reason, transient = down[key], True
        else:
            reason, transient = _try_send(channel, notification)
            if reason is None:
                status[key] = "sent"
                continue
        if transient and outbox is not None:
            keep[key] = reason
            logger.warning(f"Notification channel {key!r} failed: {reason}; kept in the outbox until it answers")
            status[key] = f"queued: {reason}"
        else:
            logger.warning(f"Notification channel {key!r} failed: {reason}")
            status[key] = f"failed: {reason}"
    if keep:
        try:
            outbox.add(notification, keep, logger)
        except Exception as error:  # the log above has the message; say it was not kept
            logger.warning(f"Notification {notification.title!r} not kept: {type(error).__name__}: {error}")
            status |= {key: f"failed: {reason} (not kept: {type(error).__name__})" for key, reason in keep.items()}
    return status


def channels_by_key(channels: Iterable[Channel]) -> dict[str, Channel]:
    """The channels by the key their outcome is reported under (`webhook`, `webhook#2`…), which is
    also the name the outbox keeps for them."""
    named: dict[str, Channel] = {}
    for channel in channels:
        named[_unique_key(channel.name, named)] = channel
    return named


def _try_send(channel: Channel, notification: Notification) -> tuple[str | None, bool]:
    """`(None, _)` when delivered, else `(reason, transient)`; the reason is safe to log."""
    try:
        channel.send(notification)
    except ChannelError as error:
        return str(error), error.transient
    except Exception as error:  # a bug in a channel must not silence the others either
        # Only the class: an unexpected exception's message was not written to be safe to log.
        return f"unexpected {type(error).__name__}", False
    return None, False


@dataclass(frozen=True)
class FlushResult:
    delivered: int = 0  # (message, channel) pairs delivered
    down: dict[str, str] = field(default_factory=dict)  # channel key: why it is still waiting
    waiting: int = 0  # messages left in the outbox


def flush_outbox(outbox: Outbox, channels: dict[str, Channel], logger: logging.Logger) -> FlushResult:
    """Send what the outbox holds, oldest first, each message once to each channel that still owes it.

    A channel that fails again (after its quick retries) is left alone for the rest of this flush:
    its later messages wait behind the first, so a flush with a channel down costs one send to it
    (1.5 s of quick retries for a webhook), however many messages wait.
    """
    down: dict[str, str] = {}
    delivered = 0
    tried: set[str] = set()
    while (entry := outbox.claim_next(set(channels), set(down), tried, logger)) is not None:
        tried.add(entry.id)
        notification = Notification.from_json(entry.notification)
        sent, dropped, failed = set(), {}, {}
        for key in entry.pending:
            if key in down or key not in channels:
                continue
            reason, transient = _try_send(channels[key], notification)
            if reason is None:
                sent.add(key)
            elif transient:
                failed[key] = down[key] = reason
            else:
                dropped[key] = reason
        outbox.settle(entry.id, sent, dropped, failed, logger)
        delivered += len(sent)
        if sent:
            logger.info(f"Delivered the kept notification {notification.title!r} to {', '.join(sorted(sent))}")
    return FlushResult(delivered=delivered, down=down, waiting=len(outbox.entries()))


def _unique_key(name: str, status: Mapping[str, Any]) -> str:
    """`name`, or `name#2`, `name#3`… for a second channel of the same kind, so no outcome is overwritten."""
    key, number = name, 2
    while key in status:
        key, number = f"{name}#{number}", number + 1
    return key
