"""A real multi-process Ray cluster on 127.0.0.1: `ray start --head --block` plus optional extra
nodes (`ray start --address ... --block`), each in its own process group.

Stopped by killing those process groups, never with `ray stop` (which would also stop any other Ray
instance on this machine, such as the in-process one of the `ray_local` fixture).
"""
from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class RayCluster:
    """`.address` is the GCS host:port (for `ray.init` / `ray start --address`), `.dashboard_url`
    the HTTP address of the dashboard and the Jobs API (for `JobSubmissionClient`, `ganpipe submit`)."""

    def __init__(self, *, num_cpus: int = 2, object_store_mb: int = 100, env: dict[str, str] | None = None):
        # A short path: Ray's Unix sockets live under the temp dir and sun_path holds ~107 bytes.
        self.temp_dir = tempfile.mkdtemp(prefix="rh-", dir="/tmp")
        self.num_cpus, self.object_store_mb = num_cpus, object_store_mb
        bin_dir = str(Path(sys.executable).parent)
        # As an activated venv would: the job entrypoints' `python`/`ganpipe` are this venv's.
        self.env = {**os.environ, **(env or {}), "RAY_AUTH_MODE": "disabled", "PATH": f"{bin_dir}:{os.environ.get('PATH', '')}"}
        self.ray_bin = os.path.join(bin_dir, "ray")
        self.address = ""
        self.dashboard_url = ""
        self._procs: list[subprocess.Popen] = []

    # -- nodes ----------------------------------------------------------------------------------
    def _node_ports(self) -> list[str]:
        # Every port a node would otherwise take at a fixed default (52365, 10001, ...) is free-picked,
        # so several nodes, and other clusters on this machine, never collide.
        return [
            "--node-manager-port", str(free_port()), "--object-manager-port", str(free_port()),
            "--dashboard-agent-listen-port", str(free_port()), "--dashboard-agent-grpc-port", str(free_port()),
            "--runtime-env-agent-port", str(free_port()), "--metrics-export-port", str(free_port()),
        ]

    def _spawn(self, args: list[str], log_name: str) -> subprocess.Popen:
        log = open(os.path.join(self.temp_dir, log_name), "ab")
        proc = subprocess.Popen([self.ray_bin, "start", "--block", "--disable-usage-stats", *args], env=self.env,
                                stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        self._procs.append(proc)
        return proc

    def start(self, timeout: float = 120.0) -> "RayCluster":
        gcs_port, dash_port = free_port(), free_port()
        self._spawn([
            "--head", "--node-ip-address", "127.0.0.1", "--port", str(gcs_port),
            "--include-dashboard", "true", "--dashboard-host", "127.0.0.1", "--dashboard-port", str(dash_port),
            "--ray-client-server-port", str(free_port()), "--num-cpus", str(self.num_cpus),
            "--object-store-memory", str(self.object_store_mb * 1024**2), "--temp-dir", self.temp_dir,
            *self._node_ports(),
        ], "head.log")
        self.address = f"127.0.0.1:{gcs_port}"
        self.dashboard_url = f"http://127.0.0.1:{dash_port}"
        # Ready when the Jobs API answers (it needs the dashboard and the head's job agent).
        self._wait(lambda: self._http_ok("/api/jobs/"), timeout, "the Jobs API")
        return self

    def add_node(self, *, num_cpus: int = 1, resources: dict[str, float] | None = None, timeout: float = 60.0) -> subprocess.Popen:
        """Start one more node on this machine and wait until the cluster counts its CPUs."""
        import json

        before = self._alive_nodes()
        args = ["--address", self.address, "--node-ip-address", "127.0.0.1", "--num-cpus", str(num_cpus),
                "--object-store-memory", str(self.object_store_mb * 1024**2), "--temp-dir", self.temp_dir, *self._node_ports()]
        if resources:
            args += ["--resources", json.dumps(resources)]
        proc = self._spawn(args, f"node-{len(self._procs)}.log")
        self._wait(lambda: self._alive_nodes() > before, timeout, "the new node")
        return proc

    def _alive_nodes(self) -> int:
        import json

        try:
            with urllib.request.urlopen(f"{self.dashboard_url}/nodes?view=summary", timeout=2) as r:
                summary = json.load(r)["data"]["summary"]
            return sum(1 for n in summary if n.get("raylet", {}).get("state") == "ALIVE")
        except (OSError, KeyError, ValueError):
            return 0

    def _http_ok(self, path: str) -> bool:
        try:
            with urllib.request.urlopen(f"{self.dashboard_url}{path}", timeout=2) as r:
                return r.status == 200
        except OSError:
            return False

    def _wait(self, ready, timeout: float, what: str) -> None:
        deadline = time.time() + timeout
        while time.time() < deadline:
            if any(p.poll() is not None for p in self._procs):
                break
            if ready():
                return
            time.sleep(0.5)
        self.stop()
        raise RuntimeError(f"Ray cluster: {what} did not come up; logs in {self.temp_dir}")

    def stop(self) -> None:
        """SIGTERM each node's process group (`ray start --block` then stops its own processes), then
        SIGKILL whatever is left of those groups; newest node first."""
        for proc in reversed(self._procs):
            if proc.poll() is None:
                try:
                    os.killpg(proc.pid, signal.SIGTERM)
                    proc.wait(timeout=30)
                except subprocess.TimeoutExpired:
                    pass
            try:
                os.killpg(proc.pid, signal.SIGKILL)  # stragglers of the group, if any
            except ProcessLookupError:
                pass
            proc.wait()
        self._procs.clear()
        shutil.rmtree(self.temp_dir, ignore_errors=True)
