"""The Ray engine refuses a cluster too small for it, at once and with a message that says what
to change (issue 11, item 9), instead of waiting forever.

The unit tests need no Ray. The slow ones start real Ray instances and clusters, each inside
private network and PID namespaces (``unshare -n -p``): Ray listens beyond loopback, and
``ray stop --force`` stops every Ray process it can see, which there are only ours. They
connect the way docs/ray-cluster.md says, with token authentication on.
"""

from __future__ import annotations

import csv
import secrets
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from medcam.errors import ConfigError
from medcam.gate.served import ServedModel
from medcam.models.checkpoint import load_checkpoint
from medcam.scoring import ScoreOptions, ray_engine, score, score_ray
from medcam.scoring.ray_cluster import RayRequest, check_resources, requested_resources
from tests.conftest import testdata_path as _testdata

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
PORT = 6380  # the namespace is new: nothing else listens in it


# --- what the run needs -------------------------------------------------------------------------


def test_the_request_is_every_actor_plus_one_decoding_cpu() -> None:
    request = requested_resources(actors=3, actor_cpus=2.0, device="cpu")
    assert request.resources == {"CPU": 7.0, "GPU": 0.0}
    cuda = requested_resources(actors=2, actor_cpus=1.0, device="cuda")
    assert cuda.resources == {"CPU": 3.0, "GPU": 2.0}
    # the write tasks take turns with the decoding tasks on that CPU: none of their own
    assert requested_resources(actors=1, actor_cpus=2.0, device="cpu", writes=True).cpus == 3.0


def test_bad_counts_are_refused() -> None:
    with pytest.raises(ConfigError, match="actors must be at least 1, got 0"):
        RayRequest(actors=0, actor_cpus=2.0)
    with pytest.raises(ConfigError, match="actor_cpus=-1"):
        RayRequest(actors=1, actor_cpus=-1.0)


# --- the check ----------------------------------------------------------------------------------


def test_a_cluster_just_large_enough_passes() -> None:
    check_resources(requested_resources(1, 2.0, "cpu"), {"CPU": 3.0, "memory": 1e9})
    # as tests/test_scoring.py runs it: --cams and --regions on a 3-CPU instance, which works
    check_resources(requested_resources(1, 2.0, "cpu", writes=True), {"CPU": 3.0})
    check_resources(requested_resources(2, 1.0, "cuda", writes=True), {"CPU": 3.0, "GPU": 2.0})
    check_resources(requested_resources(1, 2.0, "cpu"), {"CPU": 2.9999999999})  # Ray's float sums


def test_too_few_cpus_says_what_it_needs_has_and_how_to_fix_it() -> None:
    where = "the Ray cluster at 10.0.0.5:6379"
    with pytest.raises(ConfigError) as caught:
        check_resources(requested_resources(1, 2.0, "cpu"), {"CPU": 2.0, "GPU": 0.0}, where=where)
    message = str(caught.value)
    assert message.startswith(f"medcam cannot score on {where}: it needs 3 CPUs at once (1 model actor x 2 CPUs, "
                              "plus 1 for the decoding tasks), and the cluster has 2 CPUs in all")
    assert "wait for them forever" in message
    assert "ray start --head --num-cpus 3 (or more)" in message
    assert "--actors" not in message  # one actor is already the fewest
    assert "--engine local" not in message  # the user chose this cluster


def test_too_few_cpus_for_several_actors_suggests_as_many_as_fit() -> None:
    with pytest.raises(ConfigError) as caught:
        check_resources(requested_resources(3, 2.0, "cpu", writes=True), {"CPU": 6.0})
    message = str(caught.value)
    assert "needs 7 CPUs at once (3 model actors x 2 CPUs, plus 1 for the decoding and file-writing tasks)" in message
    assert "use fewer model actors (--actors 2)" in message
    assert "--num-cpus 7" in message


def test_a_large_per_actor_reservation_suggests_a_smaller_one() -> None:
    with pytest.raises(ConfigError, match=r"reserve fewer CPUs per model actor \(actor_cpus=3\)"):
        check_resources(requested_resources(1, 6.0, "cpu"), {"CPU": 4.0})
    with pytest.raises(ConfigError) as caught:  # on CPU, 1 would decode inside the actor: not suggested
        check_resources(requested_resources(1, 4.0, "cpu"), {"CPU": 2.5})
    assert "actor_cpus" not in str(caught.value)


def test_cuda_without_enough_gpus() -> None:
    with pytest.raises(ConfigError) as caught:
        check_resources(requested_resources(1, 1.0, "cuda"), {"CPU": 16.0})
    message = str(caught.value)
    assert "it needs 1 GPU (one per model actor with --device cuda), and the cluster has 0 GPUs in all" in message
    assert "use --device cpu" in message and "--num-gpus 1" in message
    assert "CPUs at once" not in message  # the CPUs are enough
    with pytest.raises(ConfigError, match=r"use fewer model actors \(--actors 2\)"):
        check_resources(requested_resources(3, 1.0, "cuda"), {"CPU": 16.0, "GPU": 2.0})


def test_a_local_instance_gets_advice_about_this_machine() -> None:
    with pytest.raises(ConfigError) as caught:
        check_resources(requested_resources(1, 2.0, "cpu"), {"CPU": 2.0}, where="the Ray instance on this machine",
                        local=True)
    message = str(caught.value)
    assert "medcam cannot score on the Ray instance on this machine" in message
    assert "run on a machine with at least 3 CPUs, or on a Ray cluster that has them (--ray-address)" in message
    assert "use --engine local" in message and "ray start" not in message


# --- score_ray checks before it sends any work (a stand-in for Ray) ------------------------------


class _FakeRay(SimpleNamespace):
    """Enough of ``ray`` for score_ray to reach its check; any work sent fails the test."""

    def __init__(self, cpus: float) -> None:
        super().__init__(calls=[], data=SimpleNamespace(DataContext=SimpleNamespace(
            get_current=lambda: SimpleNamespace())))
        self.cpus = cpus

    def is_initialized(self) -> bool:
        return False

    def init(self, **kwargs: Any) -> None:
        self.calls.append(("init", kwargs))

    def cluster_resources(self) -> dict[str, float]:
        return {"CPU": self.cpus, "memory": 1e9}

    def put(self, value: Any) -> None:
        raise AssertionError("work was sent to a cluster that cannot run it")

    def shutdown(self) -> None:
        self.calls.append(("shutdown", {}))


def test_score_ray_refuses_a_small_local_instance_before_any_work(monkeypatch: pytest.MonkeyPatch,
                                                                   tiny_checkpoint: Path, tmp_path: Path) -> None:
    fake = _FakeRay(cpus=2.0)
    monkeypatch.setattr(ray_engine, "import_ray", lambda: fake)
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    options = ScoreOptions(out=tmp_path / "r.csv", progress=False, workers=0)
    with pytest.raises(ConfigError, match="cannot score on the Ray instance on this machine: it needs 3 CPUs"):
        score_ray([tmp_path], load_checkpoint(tiny_checkpoint), options, num_cpus=2)
    assert [name for name, _ in fake.calls] == ["init", "shutdown"]  # the instance it started is stopped
    assert fake.calls[0][1]["num_cpus"] == 2
    assert not (tmp_path / "r.csv").exists()


def test_score_ray_names_the_cluster_it_was_given(monkeypatch: pytest.MonkeyPatch, tiny_checkpoint: Path,
                                                  tmp_path: Path) -> None:
    fake = _FakeRay(cpus=4.0)
    monkeypatch.setattr(ray_engine, "import_ray", lambda: fake)
    options = ScoreOptions(out=tmp_path / "r.csv", progress=False, workers=0)
    with pytest.raises(ConfigError, match=r"the Ray cluster at 10\.1\.2\.3:6379: it needs 5 CPUs .*--actors 1"):
        score_ray([tmp_path], load_checkpoint(tiny_checkpoint), options, address="10.1.2.3:6379", actors=2)
    monkeypatch.setenv("RAY_ADDRESS", "10.9.9.9:6379")
    with pytest.raises(ConfigError, match=r"the Ray cluster at 10\.9\.9\.9:6379: .*ray start --head --num-cpus 7"):
        score_ray([tmp_path], load_checkpoint(tiny_checkpoint), options, actors=3)


# --- real Ray, in private namespaces ------------------------------------------------------------


@pytest.fixture
def namespace() -> Iterator[Path]:
    """A short private folder for Ray's sockets and logs (``RAY_TMPDIR``) and ``HOME``, once it is
    known that this user may make network and PID namespaces."""
    pytest.importorskip("ray.data", reason='Ray is optional: pip install "medcam-screening[distributed]"')
    if shutil.which("unshare") is None or shutil.which("ip") is None:
        pytest.skip("needs unshare (util-linux) and ip (iproute2) to keep Ray inside a private network")
    probe = subprocess.run(["unshare", "-n", "-p", "--kill-child", "--mount-proc", "ip", "link", "set", "lo", "up"],
                           capture_output=True, text=True, timeout=30)
    if probe.returncode != 0:
        pytest.skip(f"unshare -n -p is not permitted here ({probe.stderr.strip()}); CI runs it as root")
    folder = Path(tempfile.mkdtemp(prefix="mcr", dir="/tmp"))  # socket paths must stay short
    (folder / "home").mkdir()
    try:
        yield folder
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def _in_namespace(folder: Path, script: str, timeout: float) -> subprocess.CompletedProcess[str]:
    """Run ``script`` (bash) in new network and PID namespaces: loopback only, and every process
    it starts is killed when it ends (or when this test kills it)."""
    environment = (f"export HOME={folder / 'home'} RAY_TMPDIR={folder} RAY_USAGE_STATS_ENABLED=0 "
                   f"PATH={BIN}:$PATH PYTHONPATH={REPO}\n")
    return subprocess.run(["unshare", "-n", "-p", "--kill-child", "--mount-proc", "bash", "-c",
                           "set -u\nip link set lo up\n" + environment + script],
                          capture_output=True, text=True, timeout=timeout, cwd=REPO)


def _inputs(folder: Path) -> Path:
    """Two small DICOMs that are scored and one cut short (an error row)."""
    inputs = folder / "in"
    inputs.mkdir()
    for name in ("CT_small.dcm", "MR_small.dcm"):
        shutil.copy(_testdata(name), inputs / name)
    (inputs / "cut.dcm").write_bytes((inputs / "CT_small.dcm").read_bytes()[:2000])
    return inputs


def _rows(path: Path) -> dict[str, dict[str, str]]:
    with open(path, newline="") as f:
        return {row["path"]: row for row in csv.DictReader(f)}


@pytest.mark.slow
def test_a_small_local_instance_fails_fast(namespace: Path, tiny_checkpoint: Path) -> None:
    inputs = _inputs(namespace)
    program = ("from pathlib import Path\n"
               "from medcam.errors import ConfigError\n"
               "from medcam.models.checkpoint import load_checkpoint\n"
               "from medcam.scoring import ScoreOptions, score_ray\n"
               "try:\n"
               f"    score_ray([{str(inputs)!r}], load_checkpoint({str(tiny_checkpoint)!r}),\n"
               f"              ScoreOptions(out=Path({str(namespace / 'r.csv')!r}), progress=False), num_cpus=2)\n"
               "except ConfigError as err:\n"
               "    print('refused:', err)\n")
    start = time.perf_counter()
    done = _in_namespace(namespace, f"env -u RAY_ADDRESS timeout 120 python -c {shlex.quote(program)}", timeout=180)
    seconds = time.perf_counter() - start
    assert done.returncode == 0, done.stdout + done.stderr
    assert "refused: medcam cannot score on the Ray instance on this machine: it needs 3 CPUs" in done.stdout
    assert "has 2 CPUs in all" in done.stdout and "--engine local" in done.stdout
    assert seconds < 120
    assert not (namespace / "r.csv").exists()


@pytest.mark.slow
def test_an_existing_cluster_too_small_fails_fast_and_one_large_enough_scores_like_the_local_engine(
        namespace: Path, tiny_checkpoint: Path) -> None:
    inputs = _inputs(namespace)
    local_out, few, enough = namespace / "local.csv", namespace / "few.csv", namespace / "enough.csv"
    score([inputs], ServedModel(str(tiny_checkpoint)), ScoreOptions(out=local_out, progress=False, workers=0,
                                                                               ignore_intended_use=True))

    token = secrets.token_hex(32)  # token authentication on, connected to as docs/ray-cluster.md says
    start = (f"ray start --head --port {PORT} "
             "--node-ip-address 127.0.0.1 --include-dashboard=false --disable-usage-stats")
    medcam = (f"python -m medcam score {inputs} --engine ray "
              f"--ray-address 127.0.0.1:{PORT} --model {tiny_checkpoint} --workers 0 "
              "--ignore-intended-use")  # its inputs are CT and MR slices
    script = f"""
export RAY_AUTH_MODE=token RAY_AUTH_TOKEN={token}
trap 'ray stop --force > /dev/null 2>&1' EXIT
{start} --num-cpus 2 > {namespace}/start2.log 2>&1 || exit 10
date +%s.%N > {namespace}/few.begin
timeout 120 {medcam} --out {few} > {namespace}/few.out 2> {namespace}/few.err
echo $? > {namespace}/few.rc
date +%s.%N > {namespace}/few.end
ray stop --force > /dev/null 2>&1
{start} --num-cpus 4 > {namespace}/start4.log 2>&1 || exit 11
timeout 300 {medcam} --out {enough} > {namespace}/enough.out 2> {namespace}/enough.err
echo $? > {namespace}/enough.rc
"""
    done = _in_namespace(namespace, script, timeout=540)
    logs = {p.name: p.read_text()[-3000:] for p in namespace.glob("*.log") if p.is_file()}
    assert done.returncode == 0, (done.stdout, done.stderr, logs)

    few_err = (namespace / "few.err").read_text()
    assert (namespace / "few.rc").read_text().strip() == "1", few_err[-3000:]
    assert float((namespace / "few.end").read_text()) - float((namespace / "few.begin").read_text()) < 120
    assert (f"medcam score: error: medcam cannot score on the Ray cluster at 127.0.0.1:{PORT}: it needs 3 CPUs "
            "at once (1 model actor x 2 CPUs, plus 1 for the decoding tasks), and the cluster has 2 CPUs in all"
            ) in few_err
    assert "ray start --head --num-cpus 3 (or more)" in few_err
    assert not few.exists()  # refused before the results file was opened

    enough_err = (namespace / "enough.err").read_text()
    assert (namespace / "enough.rc").read_text().strip() == "3", enough_err[-3000:]  # the cut file's error row
    local, remote = _rows(local_out), _rows(enough)
    assert set(local) == set(remote) and len(local) == 3
    assert sorted(row["status"] for row in local.values()) == ["error", "ok", "ok"]
    for path, row in local.items():
        other = remote[path]
        for column in ("path", "status", "reason", "sop_instance_uid", "series_instance_uid", "study_instance_uid",
                       "label", "flagged"):
            assert other[column] == row[column], (path, column)
        probabilities = [c for c in row if c.startswith("prob_")]
        assert len(probabilities) == 2
        for column in probabilities:
            if row["status"] == "ok":
                assert float(other[column]) == pytest.approx(float(row[column]), abs=1e-5), (path, column)
            else:
                assert other[column] == row[column] == "", (path, column)
