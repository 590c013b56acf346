"""Starting the reviewer: its configuration, and the Streamlit command that ``medcam review`` runs.

``medcam review`` passes the configuration to the app in environment variables
(:data:`ENV`), and the server settings as Streamlit command-line flags: the address
(127.0.0.1 unless asked), the port, headless mode, no usage statistics, the upload size
limit, no file watcher and a dark theme (radiographs are read in dim rooms).

Files the app keeps, beside the database ``DB``: ``DB.files/uploads/`` (uploaded images) and
``DB.files/exports/`` (exports). The default database is ``DIR/.medcam-review/review.db``
(``./.medcam-review/review.db`` without a folder); hidden folders are not scanned as images.
"""

from __future__ import annotations

import ipaddress
import os
import signal
import subprocess
import sys
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from medcam.errors import ConfigError, MedcamError
from medcam.review.worklist import Limits

__all__ = ["APP", "ENV", "STOP_SIGNALS", "ReviewConfig", "default_db", "is_loopback", "launch", "run_server",
           "streamlit_command"]

APP = Path(__file__).resolve().parents[2] / "apps" / "reviewer.py"
ENV = {"folder": "MEDCAM_REVIEW_DIR", "db": "MEDCAM_REVIEW_DB", "model": "MEDCAM_REVIEW_MODEL",
       "segmenter": "MEDCAM_REVIEW_SEGMENTER", "max_upload_mb": "MEDCAM_REVIEW_MAX_UPLOAD_MB",
       "max_pixels": "MEDCAM_REVIEW_MAX_PIXELS"}
INSTALL_HINT = 'the reviewer needs Streamlit; install it with: pip install "medcam-screening[app]"'


def default_db(folder: str | Path | None) -> Path:
    """``DIR/.medcam-review/review.db``, or ``./.medcam-review/review.db`` without a folder."""
    return Path(folder or ".") / ".medcam-review" / "review.db"


@dataclass(frozen=True)
class ReviewConfig:
    """What the app works on.

    Attributes:
        folder: the data folder scanned for images, or None (uploads only).
        db: the review database (SQLite file).
        model: checkpoint path, or ``"bundled"``.
        limits: upload size and pixel count limits.
        segmenter: lung segmenter checkpoint path, ``"bundled"``, or ``"none"`` (any case) for
            none: then no lung outline, ``lung_evidence`` or caution (see :attr:`served_segmenter`).
    """

    folder: Path | None
    db: Path
    model: str = "bundled"
    limits: Limits = field(default_factory=Limits)
    segmenter: str = "bundled"

    @property
    def served_segmenter(self) -> str | None:
        """The ``segmenter`` argument of :class:`~medcam.gate.ServedModel`: None for ``"none"``."""
        return None if self.segmenter.strip().lower() == "none" else self.segmenter

    @property
    def uploads(self) -> Path:
        return self.db.parent / f"{self.db.name}.files" / "uploads"

    @property
    def exports(self) -> Path:
        return self.db.parent / f"{self.db.name}.files" / "exports"

    @property
    def max_upload_mb(self) -> int:
        return max(1, self.limits.max_bytes // 2**20)

    def to_env(self) -> dict[str, str]:
        """The environment variables that :meth:`from_env` reads back."""
        env = {ENV["db"]: str(self.db.resolve()), ENV["model"]: self.model, ENV["segmenter"]: self.segmenter,
               ENV["max_upload_mb"]: str(self.max_upload_mb), ENV["max_pixels"]: str(self.limits.max_pixels)}
        if self.folder is not None:
            env[ENV["folder"]] = str(self.folder.resolve())
        return env

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> ReviewConfig:
        """The configuration ``medcam review`` passed (defaults for what is unset).

        Raises:
            ConfigError: a limit that is not a positive whole number, or a missing folder.
        """
        environ = os.environ if environ is None else environ
        folder = Path(environ[ENV["folder"]]) if environ.get(ENV["folder"]) else None
        if folder is not None and not folder.is_dir():
            raise ConfigError(f"{folder}: the review folder does not exist or is not a folder")
        numbers = {}
        for name, default in (("max_upload_mb", Limits().max_bytes // 2**20), ("max_pixels", Limits().max_pixels)):
            text = environ.get(ENV[name], "") or str(default)
            try:
                numbers[name] = int(text)
            except ValueError:
                raise ConfigError(f"{ENV[name]} must be a whole number, got {text!r}") from None
            if numbers[name] < 1:
                raise ConfigError(f"{ENV[name]} must be positive, got {text!r}")
        db = Path(environ[ENV["db"]]) if environ.get(ENV["db"]) else default_db(folder)
        return cls(folder=folder, db=db, model=environ.get(ENV["model"]) or "bundled",
                   limits=Limits(max_bytes=numbers["max_upload_mb"] * 2**20, max_pixels=numbers["max_pixels"]),
                   segmenter=environ.get(ENV["segmenter"]) or "bundled")


def streamlit_command(config: ReviewConfig, *, host: str = "127.0.0.1", port: int = 8501,
                      app: Path = APP) -> tuple[list[str], dict[str, str]]:
    """The ``streamlit run`` command line for the app, and the environment to run it in."""
    if not 0 < port < 65536:
        raise ConfigError(f"--port must be between 1 and 65535, got {port!r}")
    argv = [sys.executable, "-m", "streamlit", "run", str(app),
            "--server.address", host, "--server.port", str(port), "--server.headless", "true",
            "--browser.gatherUsageStats", "false", "--server.maxUploadSize", str(config.max_upload_mb),
            "--server.fileWatcherType", "none", "--server.runOnSave", "false",
            "--client.toolbarMode", "minimal", "--theme.base", "dark"]
    return argv, {**os.environ, **config.to_env()}


def is_loopback(host: str) -> bool:
    """True for ``localhost`` and loopback addresses (127.0.0.0/8, ::1)."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def launch(config: ReviewConfig, *, host: str = "127.0.0.1", port: int = 8501) -> int:
    """Check the app, database, model and lung segmenter, then run the Streamlit server until it stops.

    Raises:
        MedcamError: Streamlit is missing, the app file is missing, the database cannot be
            opened, or the model or the segmenter cannot be loaded.
    """
    from medcam.models.checkpoint import load_checkpoint
    from medcam.models.lungs import load_segmenter
    from medcam.review.store import ReviewStore

    try:
        import streamlit  # noqa: F401 (checked here so that the hint comes before the server starts)
    except ImportError as err:
        raise MedcamError(INSTALL_HINT) from err
    if not APP.is_file():
        raise MedcamError(f"{APP}: the reviewer app is missing; it ships with the medcam source tree (apps/)")
    if config.folder is not None and not config.folder.is_dir():
        raise ConfigError(f"{config.folder}: the review folder does not exist or is not a folder")
    store = ReviewStore(config.db)
    ckpt = load_checkpoint(config.model)
    segmenter = None if config.served_segmenter is None else load_segmenter(config.served_segmenter)
    argv, env = streamlit_command(config, host=host, port=port)
    state = "trained" if ckpt.trained else "UNTRAINED PLACEHOLDER - scores and maps are meaningless"
    lungs = "no lung segmenter" if segmenter is None else f"lung segmenter {segmenter.segmenter_id}"
    print(f"model {ckpt.model_id} ({state}); {lungs}")
    print(f"reviews in {store.path}; folder {config.folder or '(none: uploads only)'}")
    if not is_loopback(host):
        print(f"warning: the reviewer has no login; anyone who can reach {host}:{port} can see these images",
              file=sys.stderr)
    shown = f"[{host}]" if ":" in host else host
    print(f"open http://{shown}:{port} (Ctrl-C stops the server)", flush=True)
    return run_server(argv, env)


STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)


def run_server(argv: list[str], env: dict[str, str], *, grace: float = 10.0) -> int:
    """Run the server as a child process and never leave it behind.

    SIGTERM (what a service manager sends), SIGINT and SIGHUP are passed on to the server,
    which gets ``grace`` seconds to stop before it is killed (a signal that reaches it while it
    starts can be lost); so does any other way this process leaves the function. Returns the
    server's exit status, or ``128 + signal`` when a signal stopped it.
    """
    server = subprocess.Popen(argv, env=env)
    received: list[int] = []
    deadline: list[float] = []

    def forward(signum: int, frame: object) -> None:
        received.append(signum)
        deadline.append(time.monotonic() + grace)
        if server.poll() is None:
            server.send_signal(signal.SIGTERM if signum == signal.SIGHUP else signum)

    previous = {sig: signal.signal(sig, forward) for sig in STOP_SIGNALS}
    try:
        code = None
        while code is None:
            try:
                code = server.wait(timeout=0.5)
            except subprocess.TimeoutExpired:
                if deadline and time.monotonic() > deadline[0]:
                    server.kill()
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        if server.poll() is None:
            server.terminate()
            try:
                server.wait(timeout=grace)
            except subprocess.TimeoutExpired:
                server.kill()
                server.wait()
    return 128 + received[0] if received else code
