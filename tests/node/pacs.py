"""A real PACS for the node tests: Orthanc (with its DICOMweb plugin) in a private network namespace.

Debian's Orthanc 1.10 cannot bind to loopback only, so every test PACS runs inside its own
network namespace (``unshare -n``): nothing it opens is reachable from the host, and ports 4242
and 8042 are free there whatever the host runs. Whatever talks to it - dcmtk's ``storescu``,
``medcam`` itself, an HTTP request - runs inside the same namespace through ``nsenter``.

>>> with Netns() as ns, Orthanc(tmp_path, ns) as pacs:
...     pacs.store_with_storescu([path])
...     pacs.count_instances()
1
"""

from __future__ import annotations

import base64
import contextlib
import ctypes
import functools
import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any, TypeVar, cast

__all__ = ["DEFAULT_MODALITIES", "DICOMWEB_PLUGIN", "ORTHANC", "STORESCU", "HttpReply", "Netns", "Orthanc", "PacsError",
           "pacs_unavailable"]

T = TypeVar("T")
_CLONE_NEWNET = 0x40000000

ORTHANC = Path("/usr/sbin/Orthanc")
# dcmtk's, by its path: pynetdicom installs its own ``storescu`` (other options) into the venv's bin
STORESCU = Path("/usr/bin/storescu")
DICOMWEB_PLUGIN = Path("/usr/share/orthanc/plugins/libOrthancDicomWeb.so")
DEFAULT_MODALITIES: Mapping[str, Sequence[Any]] = {"medcam": ["MEDCAM", "127.0.0.1", 11112]}

# Run inside the namespace by the venv's Python: one HTTP request, the reply as JSON on stdout.
_HTTP_CLIENT = r"""
import base64, json, sys, urllib.error, urllib.request
method, url, content_type, timeout = sys.argv[1], sys.argv[2], sys.argv[3], float(sys.argv[4])
data = sys.stdin.buffer.read() or None
request = urllib.request.Request(url, data=data, method=method)
if data is not None:
    request.add_header("Content-Type", content_type)
try:
    with urllib.request.urlopen(request, timeout=timeout) as answer:
        status, headers, body = answer.status, dict(answer.headers), answer.read()
except urllib.error.HTTPError as err:
    status, headers, body = err.code, dict(err.headers), err.read()
json.dump({"status": status, "headers": headers, "body": base64.b64encode(body).decode()}, sys.stdout)
"""


@functools.cache
def _libc() -> ctypes.CDLL:
    return ctypes.CDLL(None, use_errno=True)


class PacsError(RuntimeError):
    """The test PACS or its namespace could not do what a test asked; the message says why."""


def _tail(path: Path, lines: int = 40) -> str:
    """The last ``lines`` lines of a log file, for failure messages."""
    try:
        text = path.read_text(errors="replace")
    except OSError as err:
        return f"(no log: {err})"
    return "\n".join(text.splitlines()[-lines:])


def pacs_unavailable() -> str | None:
    """Why a test PACS cannot run on this machine (a sentence), or ``None`` when it can."""
    for tool in ("unshare", "nsenter", "ip"):
        if shutil.which(tool) is None:
            return f"{tool} is not installed (apt-get install util-linux iproute2)"
    if not STORESCU.is_file():
        return f"dcmtk's {STORESCU} is missing (apt-get install dcmtk)"
    if not ORTHANC.is_file():
        return f"{ORTHANC} is missing (apt-get install orthanc)"
    if not DICOMWEB_PLUGIN.is_file():
        return f"{DICOMWEB_PLUGIN} is missing (apt-get install orthanc-dicomweb)"
    try:
        probe = subprocess.run(["unshare", "-n", "true"], capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired) as err:
        return f"'unshare -n' could not run: {err}"
    if probe.returncode != 0:
        return (f"'unshare -n' is not permitted here (needs root or CAP_SYS_ADMIN): "
                f"{probe.stderr.strip() or f'exit status {probe.returncode}'}")
    return None


@dataclass(frozen=True)
class HttpReply:
    """One HTTP answer from inside a namespace."""

    status: int
    headers: Mapping[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body) if self.body.strip() else None


class Netns:
    """A private network namespace with only loopback up, held open by a ``sleep`` process.

    ``run`` and ``popen`` start commands inside it (``nsenter -t PID -n``); ``close`` kills the
    holder and every process still in the namespace; ``call`` runs a function of this process
    inside it. Use it as a context manager.
    """

    def __init__(self) -> None:
        self._children: list[subprocess.Popen[Any]] = []
        self._holder = subprocess.Popen(
            ["unshare", "-n", "bash", "-c", "ip link set lo up && echo ready && exec sleep infinity"],
            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True)
        assert self._holder.stdout is not None and self._holder.stderr is not None
        if self._holder.stdout.readline().strip() != b"ready":
            self._holder.wait(timeout=10)
            reason = self._holder.stderr.read().decode(errors="replace").strip()
            raise PacsError(f"could not make a network namespace with 'unshare -n' "
                            f"(exit status {self._holder.returncode}): {reason or 'no message'}")
        self.pid = self._holder.pid
        self._inode = os.stat(f"/proc/{self.pid}/ns/net").st_ino
        if self._inode == os.stat("/proc/self/ns/net").st_ino:
            self.close()
            raise PacsError("'unshare -n' left its process in this namespace; refusing to run a PACS here")

    def argv(self, argv: Sequence[str | os.PathLike[str]]) -> list[str]:
        """``argv`` prefixed so that it runs inside the namespace."""
        return ["nsenter", "-t", str(self.pid), "-n", *(os.fspath(arg) for arg in argv)]

    def run(self, argv: Sequence[str | os.PathLike[str]], **kw: Any) -> subprocess.CompletedProcess[Any]:
        """:func:`subprocess.run` inside the namespace (``env``, ``cwd``, ``timeout`` ... pass through)."""
        return subprocess.run(self.argv(argv), **kw)

    def popen(self, argv: Sequence[str | os.PathLike[str]], **kw: Any) -> subprocess.Popen[Any]:
        """:class:`subprocess.Popen` inside the namespace, in its own process group; ``close`` ends it."""
        kw.setdefault("start_new_session", True)
        process = subprocess.Popen(self.argv(argv), **kw)
        self._children.append(process)
        return process

    def call(self, function: Callable[..., T], /, *args: Any, **kwargs: Any) -> T:
        """``function(*args, **kwargs)`` in this process, on a thread that has joined the namespace.

        ``setns`` moves only the calling thread, so the sockets ``function`` opens are the
        namespace's and the rest of the process stays where it was; the thread ends with the call.
        Its result is returned and its exception raised here.
        """
        outcome: dict[str, Any] = {}

        def inside() -> None:
            try:
                with open(f"/proc/{self.pid}/ns/net", "rb") as ns:
                    if _libc().setns(ns.fileno(), _CLONE_NEWNET) != 0:
                        raise PacsError(f"setns into the namespace of {self.pid} failed: "
                                        f"{os.strerror(ctypes.get_errno())}")
                outcome["result"] = function(*args, **kwargs)
            except BaseException as err:
                outcome["error"] = err

        thread = threading.Thread(target=inside, name=f"netns-{self.pid}")
        thread.start()
        thread.join()
        if "error" in outcome:
            raise outcome["error"]
        return cast(T, outcome["result"])

    def request(self, method: str, url: str, data: bytes | None = None, *,
                content_type: str = "application/json", timeout: float = 30.0) -> HttpReply:
        """One HTTP request made from inside the namespace, whatever its status."""
        done = self.run([sys.executable, "-c", _HTTP_CLIENT, method, url, content_type, str(timeout)],
                        input=data or b"", capture_output=True, timeout=timeout + 30)
        if done.returncode != 0:
            raise PacsError(f"{method} {url} failed inside the namespace: "
                            f"{done.stderr.decode(errors='replace').strip()[-2000:]}")
        reply = json.loads(done.stdout)
        return HttpReply(reply["status"], reply["headers"], base64.b64decode(reply["body"]))

    def http(self, method: str, url: str, data: bytes | None = None, *,
             content_type: str = "application/json", timeout: float = 30.0) -> Any:
        """The parsed JSON answer of a request (``None`` when empty); a status >= 400 raises :class:`PacsError`."""
        reply = self.request(method, url, data, content_type=content_type, timeout=timeout)
        if reply.status >= 400:
            raise PacsError(f"{method} {url} answered HTTP {reply.status}: "
                            f"{reply.body.decode(errors='replace')[:2000]}")
        return reply.json()

    def get_json(self, url: str) -> Any:
        return self.http("GET", url)

    def post_json(self, url: str, body: Any) -> Any:
        data = body.encode() if isinstance(body, str) else json.dumps(body).encode()
        return self.http("POST", url, data)

    def _members(self) -> list[int]:
        """The processes still in the namespace, the holder included."""
        pids = []
        for entry in Path("/proc").iterdir():
            if entry.name.isdigit():
                try:
                    if os.stat(entry / "ns" / "net").st_ino == self._inode:
                        pids.append(int(entry.name))
                except OSError:
                    continue
        return pids

    def close(self) -> None:
        """Stop whatever was started in the namespace, then the holder; the namespace goes with it."""
        for process in self._children:
            if process.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(process.pid, signal.SIGKILL)
        deadline = time.monotonic() + 10
        while (members := [pid for pid in self._members() if pid != os.getpid()]) and time.monotonic() < deadline:
            for pid in members:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
            time.sleep(0.05)
        for process in [*self._children, self._holder]:
            with contextlib.suppress(subprocess.TimeoutExpired):
                process.wait(timeout=10)
        for stream in (self._holder.stdout, self._holder.stderr):
            if stream is not None:
                stream.close()

    def __enter__(self) -> Netns:
        return self

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None,
                 trace: TracebackType | None) -> None:
        self.close()


class Orthanc:
    """Orthanc with the DICOMweb plugin, started from its own config in ``folder``, inside ``netns``.

    ``modalities`` are the DICOM peers it knows (name -> [AE title, host, port]); by default the
    medcam node ``MEDCAM`` at 127.0.0.1:11112. Its storage, index and log live in ``folder``.
    """

    aet = "ORTHANC"
    dicom_port = 4242
    http_port = 8042
    url = f"http://127.0.0.1:{http_port}"
    dicomweb = f"{url}/dicom-web"

    def __init__(self, folder: Path, netns: Netns, *, modalities: Mapping[str, Sequence[Any]] | None = None,
                 stable_age: int = 2, timeout: float = 60.0) -> None:
        self.folder = Path(folder)
        self.netns = netns
        self.folder.mkdir(parents=True, exist_ok=True)
        self.log = self.folder / "orthanc.log"
        self.config = self.folder / "orthanc.json"
        self.config.write_text(json.dumps({
            "Name": "medcam-test",
            "StorageDirectory": str(self.folder / "storage"),
            "IndexDirectory": str(self.folder / "index"),
            "DicomAet": self.aet,
            "DicomPort": self.dicom_port,
            "HttpPort": self.http_port,
            "RemoteAccessAllowed": False,
            "AuthenticationEnabled": False,
            "Plugins": [str(DICOMWEB_PLUGIN)],
            "DicomWeb": {"Enable": True, "Root": "/dicom-web/"},
            "DicomModalities": dict(DEFAULT_MODALITIES if modalities is None else modalities),
            "DicomAlwaysAllowStore": True,
            "DicomCheckCalledAet": False,
            "StableAge": stable_age,
            "SaveJobs": False,
        }, indent=2))
        with self.log.open("wb") as log:
            self.process = netns.popen([ORTHANC, self.config], stdin=subprocess.DEVNULL, stdout=log,
                                       stderr=subprocess.STDOUT, cwd=self.folder)
        self._wait_until_up(timeout)

    def _wait_until_up(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while True:
            if self.process.poll() is not None:
                raise PacsError(f"Orthanc exited with status {self.process.returncode} while starting "
                                f"(config {self.config}); log {self.log}:\n{_tail(self.log)}")
            if "Orthanc has started" in self.log.read_text(errors="replace"):
                try:
                    self.netns.get_json(f"{self.url}/system")
                    return
                except PacsError:
                    pass
            if time.monotonic() > deadline:
                raise PacsError(f"Orthanc did not answer GET /system within {timeout:.0f} s; "
                                f"log {self.log}:\n{_tail(self.log)}")
            time.sleep(0.1)

    def failure(self, message: str) -> PacsError:
        """A :class:`PacsError` whose message ends with the tail of Orthanc's log."""
        return PacsError(f"{message}\nOrthanc log {self.log}:\n{_tail(self.log)}")

    def get(self, route: str) -> Any:
        """``GET route`` of the REST API (``route`` starts with ``/``)."""
        try:
            return self.netns.get_json(self.url + route)
        except PacsError as err:
            raise self.failure(str(err)) from err

    def post(self, route: str, body: Any) -> Any:
        try:
            return self.netns.post_json(self.url + route, body)
        except PacsError as err:
            raise self.failure(str(err)) from err

    def studies(self) -> list[dict[str, Any]]:
        """Every study, expanded (``MainDicomTags``, ``Series`` ...)."""
        return list(self.get("/studies?expand"))

    def study_id(self, study_uid: str) -> str:
        """Orthanc's identifier of the study with this Study Instance UID."""
        found = [item["ID"] for item in self.post("/tools/lookup", study_uid) if item["Type"] == "Study"]
        if not found:
            raise self.failure(f"Orthanc holds no study {study_uid}")
        return str(found[0])

    def instances_of_study(self, study_uid: str) -> list[dict[str, Any]]:
        """The instances of one study, expanded (``ID``, ``MainDicomTags``, ``ParentSeries`` ...)."""
        return list(self.get(f"/studies/{self.study_id(study_uid)}/instances"))

    def instance_tags(self, instance_id: str) -> dict[str, Any]:
        """An instance's tags by keyword (Orthanc's ``simplified-tags``)."""
        return dict(self.get(f"/instances/{instance_id}/simplified-tags"))

    def count_instances(self) -> int:
        return int(self.get("/statistics")["CountInstances"])

    def upload(self, path: Path) -> dict[str, Any]:
        """Store one file through the REST API (``POST /instances``); Orthanc's answer."""
        try:
            return dict(self.netns.http("POST", f"{self.url}/instances", Path(path).read_bytes(),
                                        content_type="application/dicom"))
        except PacsError as err:
            raise self.failure(f"could not upload {path}: {err}") from err

    def store_with_storescu(self, paths: Sequence[Path], *, aet: str = "MEDCAM", port: int | None = None,
                            timeout: float = 120.0) -> subprocess.CompletedProcess[str]:
        """Send files with dcmtk's ``storescu`` (C-STORE) from inside the namespace; fails on any refusal.

        storescu proposes uncompressed transfer syntaxes and cannot decode JPEG-LS or JPEG 2000:
        store such files with :meth:`upload`, which keeps them as they are.
        """
        done = self.netns.run([STORESCU, "-aet", aet, "-aec", self.aet, "127.0.0.1",
                               str(port or self.dicom_port), *map(str, paths)],
                              capture_output=True, text=True, timeout=timeout)
        if done.returncode != 0:
            raise self.failure(f"storescu exited with status {done.returncode}:\n{done.stdout}{done.stderr}")
        return done

    def close(self, *, graceful: bool = False) -> None:
        """Stop Orthanc: killed at once (tests throw its storage away), or ``graceful``: SIGTERM, which takes
        Orthanc about 3 s, then SIGKILL after 20 s."""
        if self.process.poll() is None:
            if graceful:
                self.process.terminate()
                with contextlib.suppress(subprocess.TimeoutExpired):
                    self.process.wait(timeout=20)
            self.process.kill()
            self.process.wait(timeout=10)

    def __enter__(self) -> Orthanc:
        return self

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None,
                 trace: TracebackType | None) -> None:
        self.close()
