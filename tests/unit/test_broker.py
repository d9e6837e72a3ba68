"""The embedded default's filesystem queue: a message is read whole, once, whoever writes and reads at once."""

from __future__ import annotations

import multiprocessing
import os
import time
from queue import Empty

import kombu.transport.filesystem
import kombu.utils.json
import pytest
from kombu import Connection

from asiri import broker
from asiri.broker import FilesystemTransport

QUEUE = "asiri"


@pytest.fixture
def folders(tmp_path):
    paths = {name: tmp_path / name for name in ("queue", "control", "processed")}
    for path in paths.values():
        path.mkdir()
    return {
        "data_folder_in": str(paths["queue"]),
        "data_folder_out": str(paths["queue"]),
        "control_folder": str(paths["control"]),
        "processed_folder": str(paths["processed"]),
        "store_processed": False,
    }


def channel(folders):
    connection = Connection(transport=FilesystemTransport, transport_options=folders)
    return connection, connection.default_channel


def write(folders, count: int, pause: float) -> None:
    # A writer that is slow to encode, as one the scheduler pauses is: whatever a channel does between making a
    # message's file visible and filling it then takes `pause`, and a reader polling meanwhile would see it.
    def slow_dumps(payload):
        time.sleep(pause)
        return kombu.utils.json.dumps(payload)

    kombu.transport.filesystem.dumps = slow_dumps
    broker.dumps = slow_dumps
    connection, writer = channel(folders)
    for n in range(count):
        writer._put(QUEUE, {"n": n})
    connection.release()


@pytest.mark.parametrize(("count", "pause"), [(20, 0.02), (3000, 0)])
def test_messages_written_while_another_process_reads_arrive_whole_and_once(folders, count, pause):
    # kombu's own channel creates the file, then writes it: a worker polling in between took the empty file and
    # died of the JSONDecodeError, and make run stopped with it.
    writer = multiprocessing.get_context("fork").Process(target=write, args=(folders, count, pause))
    connection, reader = channel(folders)
    received = []
    writer.start()
    deadline = time.monotonic() + 60
    while len(received) < count and time.monotonic() < deadline:
        try:
            received.append(reader._get(QUEUE)["n"])
        except Empty:
            if not writer.is_alive() and not os.listdir(folders["data_folder_in"]):
                break
    writer.join(timeout=10)
    connection.release()
    assert writer.exitcode == 0
    assert sorted(received) == list(range(count))


def test_a_file_that_is_not_a_message_is_set_aside_not_fatal(folders, caplog):
    connection, queue = channel(folders)
    with open(f"{folders['data_folder_in']}/0_broken.{QUEUE}.msg", "wb") as broken:
        broken.write(b'{"n": ')
    queue._put(QUEUE, {"n": 1})
    assert queue._get(QUEUE) == {"n": 1}
    assert "not a message" in caplog.text
    with pytest.raises(Empty):
        queue._get(QUEUE)  # set aside, not read again
    assert os.listdir(folders["data_folder_in"]) == [f".0_broken.{QUEUE}.msg.not-a-message"]
    connection.release()


def test_files_left_by_killed_processes_are_removed_once_stale(folders, monkeypatch):
    queue_folder = folders["data_folder_in"]
    names = {
        "partial_old": f".1_a.{QUEUE}.msg.partial",
        "taken_old": f".2_b.{QUEUE}.msg.taken-0f0f",
        "partial_new": f".3_c.{QUEUE}.msg.partial",  # a writer's, right now
        "taken_new": f".4_d.{QUEUE}.msg.taken-1e1e",  # a reader's, right now
        "aside_old": f".5_e.{QUEUE}.msg.not-a-message",  # for someone to read
        "message_old": f"6_f.{QUEUE}.msg",  # a message, however old
    }
    two_hours_ago = time.time() - 2 * broker.STALE_SECONDS
    for key, name in names.items():
        path = os.path.join(queue_folder, name)
        with open(path, "w") as file:
            file.write("{}")
        if key.endswith("_old"):
            os.utime(path, (two_hours_ago, two_hours_ago))
    monkeypatch.setattr(broker, "_swept", set())
    connection, _ = channel(folders)
    connection.release()
    left = set(os.listdir(queue_folder))
    assert left == {names[key] for key in ("partial_new", "taken_new", "aside_old", "message_old")}
