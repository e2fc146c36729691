"""Test support: a real cbd ($CBD_BIN) on 127.0.0.1:0 with a temporary data dir, ready
once grpc.health.v1 Check answers SERVING (never a fixed sleep). It can be SIGSTOPped,
killed -9 and restarted on the same port and data dir, and scraped for its metrics."""

import os
import re
import signal
import subprocess
import time
import urllib.request
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[2]  # clients/python/tests -> repo root
START_TIMEOUT = 30.0  # seconds for the addr file and health SERVING
STOP_TIMEOUT = 20.0  # the daemon drains for at most 10 s
_METRICS_LINE = re.compile(r"metrics serving on /metrics addr=(\S+)")


def cbd_bin() -> Path:
    path = Path(os.environ.get("CBD_BIN") or "/work/bin/cbd")
    if not path.is_file():
        pytest.exit(f"cbd binary not found at {path} (set CBD_BIN, e.g. target/debug/cbd)", 2)
    return path


def until(check, timeout: float, what: str, every: float = 0.02):
    """Calls `check` every `every` seconds until it returns a truthy value (returned);
    fails the test after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(every)


class Daemon:
    """One cbd process on 127.0.0.1:0 (then the same port on restart), its own data dir."""

    def __init__(self, workdir: Path):
        self.workdir = workdir
        self.addr_file = workdir / "addr"
        self.log_path = workdir / "cbd.log"
        self.address = None
        self.metrics_address = None
        self.proc = None

    def log_tail(self) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-30:])
        except OSError:
            return ""

    def start(self) -> "Daemon":
        """Starts cbd (on the previous address when restarting) and waits for SERVING."""
        self.addr_file.unlink(missing_ok=True)
        env = {k: v for k, v in os.environ.items() if not k.startswith("CBD_")}
        with open(self.log_path, "ab") as log:
            start_of_log = log.tell()
            self.proc = subprocess.Popen(
                [str(cbd_bin()), "--listen", self.address or "127.0.0.1:0",
                 "--data-dir", str(self.workdir / "data"), "--addr-file", str(self.addr_file),
                 "--metrics-listen", "127.0.0.1:0"],
                stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, env=env)

        def addr():
            if self.proc.poll() is not None:
                raise AssertionError(f"cbd exited {self.proc.returncode}:\n{self.log_tail()}")
            return self.addr_file.exists() and self.addr_file.read_text().strip()

        self.address = until(addr, START_TIMEOUT, "the addr file")
        with grpc.insecure_channel(self.address) as channel:
            health = health_pb2_grpc.HealthStub(channel)

            def serving():
                if self.proc.poll() is not None:
                    raise AssertionError(f"cbd exited {self.proc.returncode}:\n{self.log_tail()}")
                try:
                    answer = health.Check(health_pb2.HealthCheckRequest(service=""), timeout=1.0)
                except grpc.RpcError:
                    return False
                return answer.status == health_pb2.HealthCheckResponse.SERVING

            until(serving, START_TIMEOUT, "health SERVING")
        # The metrics listener's port 0 is resolved in the log (logged before serving).
        found = _METRICS_LINE.findall(self.log_path.read_bytes()[start_of_log:].decode(errors="replace"))
        self.metrics_address = found[-1] if found else None
        return self

    def metrics(self) -> str:
        """One scrape of /metrics (Prometheus text)."""
        assert self.metrics_address, "no metrics listener in the log:\n" + self.log_tail()
        with urllib.request.urlopen(f"http://{self.metrics_address}/metrics", timeout=5) as r:
            return r.read().decode()

    def rpc_count(self, method: str, code: str = "OK") -> int:
        """How many `method` requests (e.g. "cbd.v1.Breakers/Acquire") the daemon
        answered with `code`, from its cbd_rpc_duration_seconds histogram."""
        total = 0
        for line in self.metrics().splitlines():
            if line.startswith("cbd_rpc_duration_seconds_count{") and f'method="{method}"' in line \
                    and f'code="{code}"' in line:
                total += int(float(line.rsplit(" ", 1)[1]))
        return total

    def _proc_state(self) -> str:
        # /proc/PID/stat: "pid (comm) S ...": the state letter follows the last ')'.
        return Path(f"/proc/{self.proc.pid}/stat").read_text().rsplit(")", 1)[1].split()[0]

    def pause(self):
        """SIGSTOP, and wait until every thread is stopped (the signal is delivered
        asynchronously: a request could still be answered just after kill())."""
        self.proc.send_signal(signal.SIGSTOP)
        until(lambda: self._proc_state() == "T", 5, "cbd to stop")

    def resume(self):
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGCONT)

    def kill9(self):
        """kill -9, and wait until the process is gone."""
        self.proc.kill()
        self.proc.wait(STOP_TIMEOUT)

    def stop(self):
        """SIGTERM (after SIGCONT, in case it is stopped); SIGKILL if it does not exit."""
        if self.proc is None or self.proc.poll() is not None:
            return
        self.resume()
        self.proc.terminate()
        try:
            self.proc.wait(STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(STOP_TIMEOUT)


@pytest.fixture
def daemon(tmp_path):
    """A daemon of its own for one test (for tests that stop, kill or restart it)."""
    d = Daemon(tmp_path).start()
    yield d
    d.stop()


@pytest.fixture(scope="module")
def shared_daemon(tmp_path_factory):
    """One daemon for a module's tests (each uses breaker names of its own)."""
    d = Daemon(tmp_path_factory.mktemp("cbd")).start()
    yield d
    d.stop()


class Standby:
    """The daemon's own standby routes (target/debug/standby, next to $CBD_BIN) on
    127.0.0.1:0, naming `leader` (None: no leader known). Ready once its health
    answers; it exits when its stdin closes."""

    def __init__(self, leader=None):
        path = Path(os.environ.get("CBD_STANDBY_BIN") or cbd_bin().with_name("standby"))
        if not path.is_file():
            pytest.exit(f"standby binary not found at {path} (cargo build -p cbd-tests)", 2)
        args = [str(path)] + (["--leader", leader] if leader is not None else [])
        self.proc = subprocess.Popen(args, stdin=subprocess.PIPE, stdout=subprocess.PIPE)
        self.address = self.proc.stdout.readline().decode().strip()
        assert self.address, f"standby exited {self.proc.wait(5)}"
        with grpc.insecure_channel(self.address) as channel:
            health = health_pb2_grpc.HealthStub(channel)

            def answers():
                try:
                    health.Check(health_pb2.HealthCheckRequest(service=""), timeout=1.0)
                    return True
                except grpc.RpcError:
                    return False

            until(answers, START_TIMEOUT, "the standby's health")

    def stop(self):
        self.proc.stdin.close()
        self.proc.wait(STOP_TIMEOUT)
