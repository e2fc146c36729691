"""Fixtures for the Python client proof: stubs generated from proto/ at test time,
and a real `cbd` daemon on 127.0.0.1:0 with a temporary data dir."""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[2]  # tests/polyglot/python -> repo root
PROTO_DIR = REPO / "proto" / "proto"
PROTO_FILES = [
    "cbd/v1/types.proto",
    "cbd/v1/breakers.proto",
    "cbd/v1/admin.proto",
    "google/rpc/status.proto",
]
START_TIMEOUT = 30.0  # seconds for the addr file and health SERVING
STOP_TIMEOUT = 20.0  # the daemon drains for at most 10 s


def cbd_bin() -> Path:
    path = Path(os.environ.get("CBD_BIN") or REPO / "target" / "debug" / "cbd")
    if not path.is_file():
        pytest.exit(f"cbd binary not found at {path} (build it: cargo build -p cbd, or set CBD_BIN)", 2)
    return path


@pytest.fixture(scope="session")
def pb(tmp_path_factory):
    """Generates the Python stubs from proto/ with grpc_tools.protoc into a temp dir
    and imports them. Returns a namespace with the generated modules."""
    import importlib.resources
    import types

    from grpc_tools import protoc

    out = tmp_path_factory.mktemp("stubs")
    well_known = str(importlib.resources.files("grpc_tools") / "_proto")
    args = [
        "grpc_tools.protoc",
        f"-I{PROTO_DIR}",
        f"-I{well_known}",
        f"--python_out={out}",
        f"--pyi_out={out}",
        f"--grpc_python_out={out}",
        *PROTO_FILES,
    ]
    rc = protoc.main(args)
    assert rc == 0, f"protoc failed ({rc}): {' '.join(args)}"
    sys.path.insert(0, str(out))
    from cbd.v1 import admin_pb2, admin_pb2_grpc, breakers_pb2, breakers_pb2_grpc, types_pb2

    return types.SimpleNamespace(
        types=types_pb2,
        breakers=breakers_pb2,
        breakers_grpc=breakers_pb2_grpc,
        admin=admin_pb2,
        admin_grpc=admin_pb2_grpc,
        out_dir=out,
    )


class Daemon:
    """One `cbd` process on 127.0.0.1:0; restartable on the same data dir."""

    def __init__(self, pb, workdir: Path):
        self.pb = pb
        self.workdir = workdir
        self.data_dir = workdir / "data"
        self.addr_file = workdir / "addr"
        self.proc = None
        self.channel = None
        self.address = None
        self.starts = 0
        self.log = None
        self.log_path = workdir / "cbd-1.log"

    def start(self):
        assert self.proc is None, "already running"
        self.starts += 1
        self.addr_file.unlink(missing_ok=True)
        self.log_path = self.workdir / f"cbd-{self.starts}.log"
        self.log = open(self.log_path, "wb")
        env = {k: v for k, v in os.environ.items() if not k.startswith("CBD_")}
        env.setdefault("RUST_BACKTRACE", "1")
        self.proc = subprocess.Popen(
            [
                str(cbd_bin()),
                "--listen", "127.0.0.1:0",
                "--data-dir", str(self.data_dir),
                "--addr-file", str(self.addr_file),
            ],
            stdin=subprocess.DEVNULL,
            stdout=self.log,
            stderr=subprocess.STDOUT,
            env=env,
        )
        deadline = time.monotonic() + START_TIMEOUT
        while not self.addr_file.exists():
            if self.proc.poll() is not None:
                raise AssertionError(f"cbd exited with {self.proc.returncode} before serving:\n{self.log_tail()}")
            if time.monotonic() > deadline:
                raise AssertionError(f"cbd wrote no addr file within {START_TIMEOUT}s:\n{self.log_tail()}")
            time.sleep(0.02)
        self.address = self.addr_file.read_text().strip()
        assert self.address.startswith("127.0.0.1:"), self.address
        self.channel = grpc.insecure_channel(self.address)
        health = health_pb2_grpc.HealthStub(self.channel)
        while True:
            try:
                resp = health.Check(health_pb2.HealthCheckRequest(service=""), timeout=1.0)
                if resp.status == health_pb2.HealthCheckResponse.SERVING:
                    break
            except grpc.RpcError:
                pass
            if self.proc.poll() is not None:
                raise AssertionError(f"cbd exited with {self.proc.returncode}:\n{self.log_tail()}")
            if time.monotonic() > deadline:
                raise AssertionError(f"cbd not SERVING within {START_TIMEOUT}s:\n{self.log_tail()}")
            time.sleep(0.02)
        self.breakers = self.pb.breakers_grpc.BreakersStub(self.channel)
        self.admin = self.pb.admin_grpc.AdminStub(self.channel)
        return self

    def stop(self, sig=signal.SIGTERM) -> int:
        """Sends `sig`, waits for the exit and returns the exit code."""
        if self.channel is not None:
            self.channel.close()
            self.channel = None
        if self.proc is None:
            return 0
        proc, self.proc = self.proc, None
        if proc.poll() is None:
            proc.send_signal(sig)
            try:
                proc.wait(timeout=STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
                raise AssertionError(f"cbd did not stop within {STOP_TIMEOUT}s of {sig!r}:\n{self.log_tail()}")
        self.log.close()
        return proc.returncode

    def restart(self):
        """SIGTERM, check the exit was clean, start again on the same data dir."""
        rc = self.stop()
        assert rc == 0, f"cbd exited with {rc} on SIGTERM:\n{self.log_tail()}"
        return self.start()

    def log_tail(self, lines=40) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_runtest_makereport(item, call):
    report = yield
    setattr(item, f"rep_{report.when}", report)
    return report


@pytest.fixture
def daemon(pb, tmp_path, request):
    """A running cbd; stopped (SIGTERM, then SIGKILL) at teardown, its log shown
    when the test failed."""
    d = Daemon(pb, tmp_path)
    try:
        d.start()
        yield d
    finally:
        try:
            d.stop()
        finally:
            rep = getattr(request.node, "rep_call", None)
            if rep is not None and rep.failed:
                for log in sorted(tmp_path.glob("cbd-*.log")):
                    lines = log.read_text(errors="replace").splitlines()[-60:]
                    print(f"--- {log} ---", *lines, sep="\n")


@pytest.fixture
def cbd_breaker(pb):
    """The helper module; imported after the stubs exist."""
    import cbd_breaker

    return cbd_breaker
