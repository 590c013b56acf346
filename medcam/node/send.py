"""The sending end: results leave the outbox only after the destination says it stored them.

A :class:`Destination` sends files and answers, for each, one :class:`Outcome`: ``stored``
(the file leaves the outbox), ``retry`` (the destination is down or out of resources: the file
stays and the :class:`Sender` backs off) or ``rejected`` (the destination refused this file for
good: it goes to ``rejected/`` with the reason, so that one bad file never blocks the rest).

- :class:`DimseDestination`: C-STORE to an AE (``AET@HOST:PORT``), one association per batch;
- :class:`StowDestination`: STOW-RS to a DICOMweb base URL, one request per file.

A file sent twice (a crash between the destination's success and the removal from the
outbox) carries the same UIDs both times (:mod:`medcam.export.uids`), so the archive keeps
one copy.
"""

from __future__ import annotations

import functools
import logging
import re
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, Protocol

import pydicom
from pydicom.filereader import read_file_meta_info

from medcam.errors import ConfigError
from medcam.node.scp import check_ae_title
from medcam.node.spool import Spool

__all__ = ["DimseDestination", "Outcome", "Peer", "Sender", "StowDestination", "parse_peer"]

log = logging.getLogger("medcam.node")


@dataclass(frozen=True)
class Outcome:
    """What became of one file: ``stored``, ``retry`` or ``rejected``, and why."""

    kind: Literal["stored", "retry", "rejected"]
    reason: str = ""


STORED = Outcome("stored")


class Destination(Protocol):
    def send(self, paths: Sequence[Path]) -> list[Outcome]:
        """One outcome per path, in order; never raises for a per-file or network failure."""
        ...

    def describe(self) -> str: ...


@dataclass(frozen=True)
class Peer:
    """A DICOM application entity: ``AET@HOST:PORT``."""

    ae_title: str
    host: str
    port: int

    def __str__(self) -> str:
        return f"{self.ae_title}@{self.host}:{self.port}"


def parse_peer(value: str) -> Peer:
    """``"PACS@10.0.0.7:104"`` as a :class:`Peer`.

    Raises:
        ConfigError: not of that form, an invalid AE title or port.
    """
    match = re.fullmatch(r"([^@]+)@(\[[0-9A-Fa-f:.]+\]|[^:@\s]+):(\d+)", value.strip())
    if not match:
        raise ConfigError(f"--send-to {value!r} is not of the form AET@HOST:PORT (e.g. ORTHANC@127.0.0.1:4242)")
    port = int(match.group(3))
    if not 0 < port < 65536:
        raise ConfigError(f"--send-to {value!r}: port must be 1 to 65535")
    return Peer(check_ae_title(match.group(1), "--send-to's AE title"), match.group(2).strip("[]"), port)


# C-STORE statuses (PS3.4 B.2.3): warnings mean stored; "out of resources" is worth retrying,
# every other failure is this file's and will not change by sending it again.
_WARNINGS = {0xB000, 0xB006, 0xB007, 0x0107, 0x0116}


def _store_outcome(status: int) -> Outcome:
    if status == 0x0000 or status in _WARNINGS:
        return STORED
    if 0xA700 <= status <= 0xA7FF:
        return Outcome("retry", f"the destination is out of resources (status 0x{status:04X})")
    return Outcome("rejected", f"the destination refused it (C-STORE status 0x{status:04X})")


class DimseDestination:
    """C-STORE to ``peer`` as ``calling_ae``, every file of a batch on one association."""

    def __init__(self, peer: Peer, *, calling_ae: str = "MEDCAM", timeout: float = 300.0) -> None:
        self.peer = peer
        self.calling_ae = check_ae_title(calling_ae)
        self.timeout = timeout

    def describe(self) -> str:
        return f"C-STORE to {self.peer}"

    def send(self, paths: Sequence[Path]) -> list[Outcome]:
        from pynetdicom import AE

        outcomes: dict[int, Outcome] = {}
        contexts: dict[tuple[str, str], list[int]] = {}
        for i, path in enumerate(paths):
            try:
                meta = read_file_meta_info(path)
                key = (str(meta.MediaStorageSOPClassUID), str(meta.TransferSyntaxUID))
            except Exception as err:  # not a file this node wrote whole: it cannot be sent as it is
                outcomes[i] = Outcome("rejected", f"its file meta cannot be read ({type(err).__name__}: {err})")
                continue
            contexts.setdefault(key, []).append(i)
        if contexts:
            ae = AE(ae_title=self.calling_ae)
            ae.acse_timeout = 60
            ae.dimse_timeout = self.timeout
            ae.network_timeout = self.timeout
            for sop_class, syntax in list(contexts)[:128]:  # a batch never has that many kinds
                ae.add_requested_context(sop_class, syntax)
            assoc = ae.associate(self.peer.host, self.peer.port, ae_title=self.peer.ae_title)
            if not assoc.is_established:
                why = "rejected the association" if assoc.is_rejected else "did not answer"
                return [outcomes.get(i) or Outcome("retry", f"{self.peer} {why}") for i in range(len(paths))]
            try:
                accepted = {(str(c.abstract_syntax), str(c.transfer_syntax[0])) for c in assoc.accepted_contexts}
                for key, indices in contexts.items():
                    for i in indices:
                        outcomes[i] = self._send_one(assoc, paths[i], key, accepted)
            finally:
                if assoc.is_established:
                    assoc.release()
        return [outcomes[i] for i in range(len(paths))]

    def _send_one(self, assoc: object, path: Path, key: tuple[str, str], accepted: set[tuple[str, str]]) -> Outcome:
        if key not in accepted:
            name = pydicom.uid.UID(key[0]).name
            return Outcome("rejected", f"{self.peer} does not accept {name} in {pydicom.uid.UID(key[1]).name}")
        if not assoc.is_established:  # type: ignore[attr-defined]
            return Outcome("retry", f"the association with {self.peer} was aborted")
        try:
            status = assoc.send_c_store(path)  # type: ignore[attr-defined]
        except Exception as err:  # the file could not be read or encoded: it is this file's failure
            return Outcome("rejected", f"could not be sent ({type(err).__name__}: {err})")
        if "Status" not in status:  # no response: aborted or timed out
            return Outcome("retry", f"{self.peer} did not answer the C-STORE")
        return _store_outcome(int(status.Status))


class StowDestination:
    """STOW-RS to the DICOMweb service at ``url``, one request per file."""

    def __init__(self, url: str, *, timeout: float = 300.0) -> None:
        if not re.match(r"https?://", url):
            raise ConfigError(f"--stow {url!r} is not an http:// or https:// URL")
        self.url = url.rstrip("/")
        self.timeout = timeout

    def describe(self) -> str:
        return f"STOW-RS to {self.url}"

    def send(self, paths: Sequence[Path]) -> list[Outcome]:
        import requests
        from dicomweb_client.api import DICOMwebClient

        session = requests.Session()
        session.request = functools.partial(session.request, timeout=self.timeout)  # type: ignore[method-assign]
        client = DICOMwebClient(self.url, session=session)
        client.set_http_retry_params(retry=False)  # the Sender retries, with its own backoff
        outcomes = []
        for path in paths:
            try:
                dataset = pydicom.dcmread(path)
            except Exception as err:
                outcomes.append(Outcome("rejected", f"cannot be read ({type(err).__name__}: {err})"))
                continue
            try:
                response = client.store_instances([dataset])
            except requests.HTTPError as err:
                code = err.response.status_code if err.response is not None else 0
                kind: Literal["retry", "rejected"] = "retry" if code >= 500 or code in (408, 429) else "rejected"
                outcomes.append(Outcome(kind, f"{self.url} answered HTTP {code}"))
                continue
            except requests.RequestException as err:
                outcomes.append(Outcome("retry", f"{self.url} did not answer ({type(err).__name__})"))
                continue
            failed = response.get("FailedSOPSequence") if response is not None else None
            if failed:
                reason = failed[0].get("FailureReason", "")
                outcomes.append(Outcome("rejected", f"{self.url} refused it (failure reason {reason})"))
            else:
                outcomes.append(STORED)
        return outcomes


class Sender:
    """Empties the spool's outbox into a destination, with exponential backoff while it fails."""

    def __init__(self, spool: Spool, destination: Destination, *, batch: int = 32, first_delay: float = 1.0,
                 max_delay: float = 60.0) -> None:
        self.spool = spool
        self.destination = destination
        self.batch = batch
        self.first_delay = first_delay
        self.max_delay = max_delay
        self.wake = threading.Event()
        self.sent = 0
        self.rejected = 0

    def send_waiting(self) -> bool:
        """Send what waits in the outbox, a batch at a time; False when something must be retried."""
        while True:
            paths = self.spool.waiting()[: self.batch]
            if not paths:
                return True
            outcomes = self.destination.send(paths)
            retry = False
            for path, outcome in zip(paths, outcomes, strict=True):
                if outcome.kind == "stored":
                    self.spool.sent(path)
                    self.sent += 1
                    log.info("sent %s (%s)", path.name, self.destination.describe())
                elif outcome.kind == "rejected":
                    kept = self.spool.reject(path, outcome.reason)
                    self.rejected += 1
                    log.error("%s: %s; kept in %s", path.name, outcome.reason, kept.parent)
                else:
                    retry = True
                    log.warning("%s: %s; will retry", path.name, outcome.reason)
            if retry:
                return False

    def run(self, stop: threading.Event) -> None:
        """Send until ``stop`` is set: at once when woken, after a growing delay while failing."""
        delay = self.first_delay
        while not stop.is_set():
            try:
                ok = self.send_waiting()
            except Exception:  # a bug or the spool's disk: logged, and tried again later
                log.exception("sending failed")
                ok = False
            if ok:
                delay = self.first_delay
                self.wake.wait(timeout=5.0)
                self.wake.clear()
            else:  # new results do not cut the wait short: the destination is what is failing
                stop.wait(timeout=delay)
                delay = min(delay * 2, self.max_delay)
