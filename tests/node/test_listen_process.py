"""``medcam listen`` as a real process: after ``kill -9`` at any moment - during an association,
during scoring, during sending - and a restart, every acknowledged image has exactly one result
at the archive; it stops on SIGTERM; its log names no patient (issue 15, items 2 and 4).

One test, several node processes: each start loads torch and the model, which is most of its cost.
"""

from __future__ import annotations

import re
import signal
import subprocess
import sys
import threading
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

import pytest

from medcam.node.spool import Spool
from medcam.scoring import read_results

from .peers import Archive, free_port, radiographs, send, sop_uids, source_of

BIN = Path(sys.executable).parent


class NodeProcess:
    """``medcam listen`` in a subprocess, its log lines collected as they come."""

    def __init__(self, checkpoint: Path, spool: Path, archive: Archive, port: int) -> None:
        self.port = port
        self.lines: list[str] = []
        self._new = threading.Condition()
        self.process = subprocess.Popen(
            [str(BIN / "medcam"), "listen", "--port", str(port), "--spool", str(spool), "--send-to", archive.peer,
             "--settle", "0.5", "--model", str(checkpoint), "--threads", "1"],
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        threading.Thread(target=self._read, daemon=True).start()
        self.wait_for(r"listening as MEDCAM")

    def _read(self) -> None:
        assert self.process.stderr is not None
        for line in self.process.stderr:
            with self._new:
                self.lines.append(line)
                self._new.notify_all()

    def wait_for(self, pattern: str, timeout: float = 90.0, start: int = 0) -> int:
        """The index of the first log line from ``start`` matching ``pattern``."""
        deadline = time.monotonic() + timeout
        seen = start
        with self._new:
            while True:
                for i in range(seen, len(self.lines)):
                    if re.search(pattern, self.lines[i]):
                        return i
                seen = len(self.lines)
                ended = time.monotonic() >= deadline
                if not self._new.wait(0.5) and self.process.poll() is not None:
                    ended = True
                if ended and seen == len(self.lines):
                    raise AssertionError(f"no log line matching {pattern!r}; the log:\n{''.join(self.lines)}")

    def kill(self) -> None:
        self.process.kill()
        self.process.wait(30)

    def log(self) -> str:
        return "".join(self.lines)


@pytest.fixture
def archive() -> Any:
    archive = Archive().start()
    yield archive
    archive.stop()


@pytest.mark.slow
def test_kill_9_at_any_moment_loses_nothing_and_the_archive_holds_each_result_once(
        tiny_checkpoint: Path, tmp_path: Path) -> None:
    images = (radiographs(tmp_path / "a", 4, patient="SECRET^PATIENT", patient_id="PID-SECRET-42")
              + radiographs(tmp_path / "b", 3, patient="SECRET^PATIENT", patient_id="PID-SECRET-42"))
    logs: list[str] = []
    sending = threading.Event()

    def slow_first_answer(event: Any) -> None:
        if not sending.is_set():
            sending.set()
            time.sleep(2.0)  # the node is killed while it waits for this answer

    archive = Archive(before_answer=slow_first_answer).start()
    spool, port = tmp_path / "spool", free_port()
    acknowledged: set[Path] = set()
    done = threading.Event()

    def modality() -> None:  # sends one image per association, again until it is acknowledged
        while not done.is_set() and len(acknowledged) < len(images):
            for path in images:
                if path not in acknowledged and send([path], port)[0] == 0:
                    acknowledged.add(path)
                time.sleep(0.05)
            time.sleep(0.2)

    sender = threading.Thread(target=modality, daemon=True)
    try:
        node = NodeProcess(tiny_checkpoint, spool, archive, port)
        sender.start()
        node.wait_for(r"received ")  # 1. during the modality's associations
        node.kill()
        logs.append(node.log())
        node = NodeProcess(tiny_checkpoint, spool, archive, port)
        node.wait_for(r"scoring series")  # 2. during scoring
        node.kill()
        logs.append(node.log())
        node = NodeProcess(tiny_checkpoint, spool, archive, port)
        assert sending.wait(90), node.log()  # 3. during sending: the archive has not answered yet
        node.kill()
        logs.append(node.log())
        node = NodeProcess(tiny_checkpoint, spool, archive, port)
        sender.join(120)
        assert acknowledged == set(images)
        held = archive.wait_for(len(images), timeout=120)
        deadline = time.monotonic() + 60
        while Spool(spool).waiting() and time.monotonic() < deadline:
            time.sleep(0.2)
        node.process.send_signal(signal.SIGTERM)
        assert node.process.wait(30) == 0
        logs.append(node.log())
    finally:
        done.set()
        if node.process.poll() is None:
            node.kill()
        archive.stop()
    results_of: dict[str, set[str]] = defaultdict(set)
    for uid, result in held.items():
        results_of[source_of(result)].add(uid)
    sources = set(sop_uids(images))
    assert set(results_of) == sources and all(len(uids) == 1 for uids in results_of.values())
    assert len(archive.unique()) == len(images)  # sent again maybe, stored once
    left = Spool(spool)
    assert not list(left.tmp.iterdir()) and not list(left.incoming.iterdir()) and not left.waiting()
    rows = [r for f in left.results.glob("*[0-9].csv") for r in read_results(f)]
    assert sorted(r["sop_instance_uid"] for r in rows) == sorted(sources)  # one row per image
    log = "".join(logs)
    assert "stopping (SIGTERM)" in logs[-1] and "received" in log and "sent" in log
    for secret in ("SECRET", "PATIENT", "PID-SECRET-42"):  # UIDs and AE titles only
        assert secret not in log
