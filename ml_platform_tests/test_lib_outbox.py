"""The notification outbox against a real HTTP receiver that is down, then comes back: what a channel
could not take is kept, sent once when it answers, never to a channel that already has it, never
after an error no retry can fix or a send that may have arrived; bounded; no secret in the file."""

from __future__ import annotations

import json
import logging
import socket
import threading

import pytest

from ml_platform.lib.notifications import (
    JsonWebhookChannel,
    Notification,
    channels_by_key,
    flush_outbox,
    send_notification,
)
from ml_platform.lib.outbox import CLAIM_TIMEOUT_SECONDS, Outbox
from ml_platform.resources.notifier import NotifierResource

TOKEN = "s3cr3t-token"


def message(title: str = "Run failed: batch_pipeline for batch_0004") -> Notification:
    return Notification(title=title, severity="error", summary="raw_batch failed", fields={"run": "4f6d2c1a"})


@pytest.fixture
def log(caplog) -> logging.Logger:
    caplog.set_level(logging.INFO, logger="test")
    return logging.getLogger("test")


def warnings_of(caplog) -> list[str]:
    return [record.getMessage() for record in caplog.records if record.levelno == logging.WARNING]


@pytest.fixture
def receiver_down(start_http_server):
    """A receiver whose port is closed (connections refused) until the test calls `.start()`."""
    server = start_http_server(200)
    server.stop()
    return server


def titles(server) -> list[str]:
    return [request["json"]["title"] for request in server.received]


def test_a_message_for_a_receiver_that_is_down_is_kept_and_sent_once_when_it_comes_back(
    receiver_down, tmp_path, log, caplog
):
    outbox = Outbox(tmp_path / "outbox.json")
    channel = JsonWebhookChannel(receiver_down.url(f"/hooks/{TOKEN}"), timeout=5)

    status = send_notification(message(), [channel], log, outbox)

    assert status["webhook"].startswith("queued: ConnectionError (Connection refused)")
    [entry] = outbox.entries()
    assert entry.pending == ["webhook"] and entry.notification["title"] == message().title
    assert TOKEN not in (tmp_path / "outbox.json").read_text()  # the channel's name, never its URL
    assert TOKEN not in "\n".join(record.getMessage() for record in caplog.records)

    assert flush_outbox(outbox, channels_by_key([channel]), log).down.keys() == {"webhook"}  # still down
    receiver_down.start()
    result = flush_outbox(outbox, channels_by_key([channel]), log)
    assert (result.delivered, result.waiting) == (1, 0)
    assert flush_outbox(outbox, channels_by_key([channel]), log).delivered == 0
    assert titles(receiver_down) == [message().title]
    assert outbox.entries() == []


def test_the_next_notification_sends_the_kept_ones_first_and_a_channel_that_had_it_gets_it_once(
    receiver_down, http_server, tmp_path, log
):
    outbox = Outbox(tmp_path / "outbox.json")
    down = JsonWebhookChannel(receiver_down.url("/hook"), timeout=5)
    up = JsonWebhookChannel(http_server.url("/hook"), timeout=5)

    status = send_notification(message("first"), [up, down], log, outbox)
    assert (status["webhook"], status["webhook#2"][:8]) == ("sent", "queued: ")
    assert [entry.pending for entry in outbox.entries()] == [["webhook#2"]]
    receiver_down.start()
    send_notification(message("second"), [up, down], log, outbox)

    assert titles(receiver_down) == ["first", "second"]  # the kept one first
    assert titles(http_server) == ["first", "second"]  # the first once: it had it already
    assert outbox.entries() == []


def test_an_error_no_retry_can_fix_is_neither_retried_nor_kept(start_http_server, tmp_path, log):
    wrong_path = start_http_server(404)
    outbox = Outbox(tmp_path / "outbox.json")
    status = send_notification(message(), [JsonWebhookChannel(wrong_path.url("/no-such-hook"))], log, outbox)
    assert status["webhook"] == f"failed: http://127.0.0.1:{wrong_path.server_address[1]} answered HTTP 404"
    assert len(wrong_path.received) == 1
    assert outbox.entries() == []


def test_a_send_that_may_have_arrived_is_not_sent_again(tmp_path, log):
    """A read timeout: the receiver took the request and did not answer. Sending again could duplicate it."""
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(8)
        outbox = Outbox(tmp_path / "outbox.json")
        channel = JsonWebhookChannel(f"http://127.0.0.1:{silent.getsockname()[1]}/hook", timeout=0.3)
        status = send_notification(message(), [channel], log, outbox)
    assert status["webhook"].startswith("failed: ReadTimeout")
    assert outbox.entries() == []


def test_a_send_interrupted_between_delivery_and_removal_is_dropped_not_repeated(http_server, tmp_path, log, caplog):
    now = [1_000_000.0]
    outbox = Outbox(tmp_path / "outbox.json", clock=lambda: now[0])
    outbox.add(message(), {"webhook": "refused"}, log)
    # A process claims the entry, (maybe) sends it, and dies before recording the delivery.
    assert outbox.claim_next({"webhook"}, set(), set(), log) is not None
    channels = channels_by_key([JsonWebhookChannel(http_server.url("/hook"))])

    assert flush_outbox(outbox, channels, log).delivered == 0  # claimed: nobody else sends it meanwhile
    now[0] += CLAIM_TIMEOUT_SECONDS + 1
    assert flush_outbox(outbox, channels, log).delivered == 0

    assert http_server.received == []
    assert outbox.entries() == []
    assert any("stopped mid-send, so it may have arrived" in warning for warning in warnings_of(caplog))


def test_the_outbox_keeps_at_most_max_messages_and_nothing_older_than_max_age(tmp_path, log, caplog):
    now = [1_000_000.0]
    outbox = Outbox(tmp_path / "outbox.json", max_messages=3, max_age_seconds=3600, clock=lambda: now[0])
    for number in range(5):
        outbox.add(message(f"message {number}"), {"webhook": "refused"}, log)
        now[0] += 60
    assert [entry.title for entry in outbox.entries()] == ["message 2", "message 3", "message 4"]
    assert [w for w in warnings_of(caplog) if "at most 3 messages" in w] == [
        "Kept notification 'message 0' dropped: the outbox holds at most 3 messages; never delivered to webhook",
        "Kept notification 'message 1' dropped: the outbox holds at most 3 messages; never delivered to webhook",
    ]
    now[0] += 3600 - 150  # message 2 (and only it) is now more than an hour old
    outbox.add(message("message 5"), {"webhook": "refused"}, log)
    assert [entry.title for entry in outbox.entries()] == ["message 3", "message 4", "message 5"]
    assert any("'message 2' dropped: older than 1 h" in warning for warning in warnings_of(caplog))


def test_two_flushes_at_once_deliver_each_message_once(receiver_down, tmp_path, log):
    path = tmp_path / "outbox.json"
    channel = JsonWebhookChannel(receiver_down.url("/hook"), timeout=5)
    for number in range(12):
        Outbox(path).add(message(f"message {number}"), {"webhook": "refused"}, log)
    receiver_down.start()

    # Each flusher has its own Outbox, as the daemon's sensor and an `ml-platform run` would.
    flushers = [
        threading.Thread(target=flush_outbox, args=(Outbox(path), channels_by_key([channel]), log)) for _ in range(3)
    ]
    for flusher in flushers:
        flusher.start()
    for flusher in flushers:
        flusher.join()

    assert sorted(titles(receiver_down)) == sorted(f"message {number}" for number in range(12))
    assert Outbox(path).entries() == []


def test_a_channel_no_longer_configured_is_struck_off(tmp_path, log, caplog):
    outbox = Outbox(tmp_path / "outbox.json")
    outbox.add(message(), {"slack": "refused"}, log)
    assert flush_outbox(outbox, {}, log).waiting == 0
    assert any("no longer kept for slack: not configured any more" in warning for warning in warnings_of(caplog))


def test_an_unreadable_outbox_is_set_aside_and_notifying_goes_on(tmp_path, log):
    path = tmp_path / "outbox.json"
    path.write_text("{not json")
    outbox = Outbox(path)
    outbox.add(message(), {"webhook": "refused"}, log)
    assert [entry.title for entry in outbox.entries()] == [message().title]
    assert (tmp_path / "outbox.json.unreadable").read_text() == "{not json"


def test_the_resource_keeps_the_outbox_under_the_home_and_resolves_the_url_at_send_time(
    receiver_down, tmp_path, monkeypatch, log
):
    import dagster as dg

    from ml_platform.lib.config import NotificationsConfig
    from ml_platform.resources.notifier import notifier_from_config

    monkeypatch.setenv("TEST_WEBHOOK_URL", receiver_down.url(f"/hooks/{TOKEN}"))
    config = NotificationsConfig.model_validate({"channels": {"webhook_url_env": "TEST_WEBHOOK_URL"}})
    notifier = notifier_from_config(config, tmp_path)
    assert isinstance(notifier.webhook_url, dg.EnvVar)
    assert notifier.notify(message(), log)["webhook"].startswith("queued: ")
    outbox_file = tmp_path / "notifications" / "outbox.json"
    assert json.loads(outbox_file.read_text())["entries"][0]["pending"] == ["webhook"]
    assert TOKEN not in outbox_file.read_text()

    receiver_down.start()
    assert notifier.flush_outbox(log).delivered == 1
    assert [request["path"] for request in receiver_down.received] == [f"/hooks/{TOKEN}"]
    assert NotifierResource().flush_outbox(log).delivered == 0  # no outbox configured: nothing to do
