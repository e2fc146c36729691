"""The Redis-Lua breaker the bench compares with (the scripts and what they do:
clients/redis-lua/README.md), on redis-py, and a throwaway redis-server on a free
loopback port for it."""

import socket
import subprocess
import time
from pathlib import Path

import redis

SCRIPTS = Path(__file__).resolve().parent.parent / "redis-lua"
ACQUIRE = (SCRIPTS / "acquire.lua").read_text()
REPORT = (SCRIPTS / "report.lua").read_text()


class Rejected(Exception):
    """The Redis breaker is open."""


class RedisLuaBreaker:
    """`call(fn)`: EVALSHA the acquire script, run fn, EVALSHA the report script."""

    def __init__(self, client: redis.Redis, name: str, fail_max: int = 5, open_ms: int = 30_000):
        self.key, self.fail_max, self.open_ms = f"cb:{name}", fail_max, open_ms
        self.acquire = client.register_script(ACQUIRE)
        self.report = client.register_script(REPORT)

    def call(self, fn):
        now = int(time.time() * 1000)
        if not self.acquire(keys=[self.key], args=[now]):
            raise Rejected(self.key)
        try:
            result = fn()
        except Exception:
            self.report(keys=[self.key], args=[1, now, self.fail_max, self.open_ms])
            raise
        self.report(keys=[self.key], args=[0, now, self.fail_max, self.open_ms])
        return result


class RedisServer:
    """redis-server on 127.0.0.1 and a free port, no persistence; ready once PING
    answers."""

    def __init__(self, binary: str = "redis-server"):
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        self.proc = subprocess.Popen(
            [binary, "--bind", "127.0.0.1", "--port", str(self.port), "--save", "",
             "--appendonly", "no"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 10
        while True:
            try:
                if redis.Redis(port=self.port, socket_timeout=1).ping():
                    break
            except redis.exceptions.ConnectionError:
                if self.proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"redis-server did not answer PING on port {self.port}")
                time.sleep(0.02)

    def client(self) -> redis.Redis:
        return redis.Redis(port=self.port)

    def stop(self):
        self.proc.terminate()
        self.proc.wait(10)
