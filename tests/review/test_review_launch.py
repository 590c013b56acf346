"""``medcam review``: the Streamlit command line, the app's configuration, and the CLI."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest

import medcam.review
from medcam.cli import main
from medcam.errors import CheckpointError, ConfigError
from medcam.review import launcher
from medcam.review.launcher import APP, ReviewConfig, default_db, is_loopback, streamlit_command
from medcam.review.store import ReviewStore
from medcam.review.worklist import Limits


def _flag(argv: list[str], name: str) -> str:
    return argv[argv.index(name) + 1]


def test_streamlit_command_binds_loopback_and_passes_the_settings(tmp_path: Path) -> None:
    config = ReviewConfig(folder=tmp_path, db=tmp_path / "r.db", model="m.pt",
                          limits=Limits(max_bytes=20 * 2**20, max_pixels=1000))
    argv, env = streamlit_command(config, port=8600)
    assert argv[:5] == [sys.executable, "-m", "streamlit", "run", str(APP)]
    assert APP.is_file() and APP.name == "reviewer.py"
    assert _flag(argv, "--server.address") == "127.0.0.1"
    assert _flag(argv, "--server.port") == "8600"
    assert _flag(argv, "--server.headless") == "true"
    assert _flag(argv, "--browser.gatherUsageStats") == "false"
    assert _flag(argv, "--server.maxUploadSize") == "20"
    assert ReviewConfig.from_env(env) == ReviewConfig(folder=tmp_path.resolve(), db=(tmp_path / "r.db").resolve(),
                                                     model="m.pt", limits=config.limits)
    bare = ReviewConfig(folder=None, db=tmp_path / "r.db", segmenter="None")
    assert ReviewConfig.from_env(streamlit_command(bare)[1]).segmenter == "None"
    assert (bare.served_segmenter, config.served_segmenter) == (None, "bundled")
    assert ReviewConfig(folder=None, db=tmp_path / "r.db", segmenter="seg.pt").served_segmenter == "seg.pt"
    assert _flag(streamlit_command(config, host="0.0.0.0")[0], "--server.address") == "0.0.0.0"
    with pytest.raises(ConfigError, match="--port must be between 1 and 65535, got 70000"):
        streamlit_command(config, port=70000)


def test_config_defaults_and_errors(tmp_path: Path) -> None:
    assert default_db(tmp_path) == tmp_path / ".medcam-review" / "review.db"
    config = ReviewConfig.from_env({"MEDCAM_REVIEW_DIR": str(tmp_path)})
    assert (config.db, config.model, config.limits) == (default_db(tmp_path), "bundled", Limits())
    assert config.segmenter == "bundled"
    assert config.uploads == tmp_path / ".medcam-review" / "review.db.files" / "uploads"
    assert ReviewConfig.from_env({}).folder is None
    with pytest.raises(ConfigError, match="MEDCAM_REVIEW_MAX_PIXELS must be a whole number, got 'lots'"):
        ReviewConfig.from_env({"MEDCAM_REVIEW_MAX_PIXELS": "lots"})
    with pytest.raises(ConfigError, match="MEDCAM_REVIEW_MAX_UPLOAD_MB must be positive"):
        ReviewConfig.from_env({"MEDCAM_REVIEW_MAX_UPLOAD_MB": "0"})
    with pytest.raises(ConfigError, match="does not exist"):
        ReviewConfig.from_env({"MEDCAM_REVIEW_DIR": str(tmp_path / "nowhere")})


@pytest.mark.parametrize(("host", "loopback"), [("127.0.0.1", True), ("localhost", True), ("::1", True),
                                                ("127.0.0.2", True), ("0.0.0.0", False), ("10.1.2.3", False),
                                                ("example.org", False)])
def test_is_loopback(host: str, loopback: bool) -> None:
    assert is_loopback(host) is loopback


def test_cli_maps_flags_onto_the_config(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    seen: dict[str, Any] = {}

    def fake_launch(config: ReviewConfig, *, host: str, port: int) -> int:
        seen.update(config=config, host=host, port=port)
        return 0

    monkeypatch.setattr(medcam.review, "launch", fake_launch)
    assert main(["review", str(tmp_path), "--port", "8123", "--max-upload-mb", "5", "--model", "x.pt"]) == 0
    assert (seen["host"], seen["port"]) == ("127.0.0.1", 8123)
    config = seen["config"]
    assert (config.folder, config.db, config.model) == (tmp_path, default_db(tmp_path), "x.pt")
    assert config.limits == Limits(max_bytes=5 * 2**20, max_pixels=40_000_000)
    assert config.segmenter == "bundled"
    assert main(["review", "--db", str(tmp_path / "x.db"), "--host", "::1", "--segmenter", "none"]) == 0
    assert (seen["config"].folder, seen["config"].db, seen["host"]) == (None, tmp_path / "x.db", "::1")
    assert seen["config"].served_segmenter is None


def test_launch_checks_everything_before_starting_the_server(
        monkeypatch: pytest.MonkeyPatch, tmp_path: Path, tiny_checkpoint: Path,
        capsys: pytest.CaptureFixture[str]) -> None:
    calls: list[tuple[list[str], dict[str, str]]] = []
    def fake_run(argv: list[str], env: dict[str, str]) -> int:
        calls.append((argv, env))
        return 0

    monkeypatch.setattr(launcher, "run_server", fake_run)
    config = ReviewConfig(folder=tmp_path, db=tmp_path / "db" / "r.db", model=str(tiny_checkpoint))
    assert launcher.launch(config, host="0.0.0.0", port=8124) == 0
    (argv, env), = calls
    assert _flag(argv, "--server.port") == "8124" and env["MEDCAM_REVIEW_DB"] == str(config.db.resolve())
    assert ReviewStore(config.db).schema_version >= 1  # created before the server starts
    out = capsys.readouterr()
    assert "UNTRAINED PLACEHOLDER" in out.out and "http://0.0.0.0:8124" in out.out
    assert "lung segmenter lungunet-" in out.out
    assert "no login" in out.err  # a non-loopback address is warned about
    with pytest.raises(CheckpointError):
        launcher.launch(ReviewConfig(folder=tmp_path, db=tmp_path / "r.db", model=str(tmp_path / "none.pt")))
    with pytest.raises(CheckpointError):  # a missing segmenter is found before the server starts
        launcher.launch(ReviewConfig(folder=tmp_path, db=tmp_path / "r.db", model=str(tiny_checkpoint),
                                     segmenter=str(tmp_path / "lungs.pt")))
    assert len(calls) == 1
    assert launcher.launch(ReviewConfig(folder=tmp_path, db=tmp_path / "r.db", model=str(tiny_checkpoint),
                                        segmenter="none")) == 0
    assert "no lung segmenter" in capsys.readouterr().out and calls[-1][1]["MEDCAM_REVIEW_SEGMENTER"] == "none"
    assert main(["review", str(tmp_path / "missing")]) == 1  # refused with a message, no traceback
    assert "does not exist" in capsys.readouterr().err


def _listening(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(0.5)
        return s.connect_ex(("127.0.0.1", port)) == 0


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.mark.slow
@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT, signal.SIGHUP])
def test_review_stops_its_server_on_a_signal(sig: int, tiny_checkpoint: Path, tmp_path: Path) -> None:
    pytest.importorskip("streamlit", reason='the reviewer needs Streamlit: pip install "medcam-screening[app]"')
    port = _free_port()
    review = subprocess.Popen([sys.executable, "-m", "medcam", "review", str(tmp_path), "--port", str(port),
                               "--model", str(tiny_checkpoint)], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                              start_new_session=True)  # its own group: only the signal we send reaches it
    try:
        deadline = time.monotonic() + 120
        while not _listening(port):
            assert review.poll() is None, review.stderr.read() if review.stderr else ""
            assert time.monotonic() < deadline, "the server never listened"
            time.sleep(0.2)
        review.send_signal(sig)
        assert review.wait(timeout=30) == 128 + sig
        deadline = time.monotonic() + 15
        while _listening(port) and time.monotonic() < deadline:
            time.sleep(0.2)
        assert not _listening(port), "the Streamlit server outlived medcam review"
    finally:
        if review.poll() is None:
            os.killpg(review.pid, signal.SIGKILL)


def test_a_server_that_ignores_the_signal_is_killed_after_the_grace(tmp_path: Path) -> None:
    """A signal can reach the server before it handles signals; medcam review still stops."""
    deaf = [sys.executable, "-c", "import signal, time; signal.signal(signal.SIGINT, signal.SIG_IGN); time.sleep(60)"]
    timer = threading.Timer(1.0, os.kill, (os.getpid(), signal.SIGINT))  # as Ctrl-C would
    start = time.monotonic()
    timer.start()
    try:
        code = launcher.run_server(deaf, dict(os.environ), grace=1.0)
    finally:
        timer.cancel()
    assert code == 128 + signal.SIGINT and time.monotonic() - start < 15
