"""Run a local anvil node as a child process.

    with Anvil(port=0, log_path=Path(".devnet/anvil.log")) as node:
        print(node.url)

stdout/stderr go to a log file (anvil logs every RPC call; an undrained pipe would block it).

Process handling:
- A port that is already taken fails at once with `PortInUseError` ("port P is in use"),
  checked before starting and again if anvil exits early with "Address already in use".
- `die_with_parent=True` (the default): on Linux the child gets SIGTERM from the kernel
  when the process that started it dies, even by SIGKILL (`prctl(PR_SET_PDEATHSIG)`), so a
  killed keeper, demo or test session never leaves a node behind. The kernel ties this to
  the *thread* that started the child, so it is only set when starting from the main
  thread. `keeper devnet up --detach` passes False: that node must outlive the command.
"""

from __future__ import annotations

import ctypes
import errno
import functools
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Callable, Sequence

from ..errors import ConfigError, KeeperError

REPO_ROOT = Path(__file__).resolve().parents[2]
DEFAULT_ANVIL = REPO_ROOT / "node_modules" / "@foundry-rs" / "anvil-linux-amd64" / "bin" / "anvil"
CHAIN_ID = 31337
DEFAULT_MNEMONIC = "test test test test test test test test test test test junk"


class DevnetError(KeeperError, RuntimeError):
    """anvil could not be found or started (a RuntimeError, as before, for existing callers)."""


class PortInUseError(ConfigError, RuntimeError):
    """The requested port is taken by another process: a user-facing one-line error."""

    def __init__(self, port: int):
        super().__init__(f"port {port} is in use (choose another with --port, or 0 for a free one)")
        self.port = port


PR_SET_PDEATHSIG = 1


@functools.cache
def _get_prctl() -> Callable[..., int] | None:
    """libc's prctl (Linux), looked up once; None where there is none."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        fn = ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):
        return None
    fn.argtypes = [ctypes.c_int, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong]
    fn.restype = ctypes.c_int
    return fn


def parent_death_preexec(sig: int = signal.SIGTERM) -> Callable[[], None] | None:
    """A subprocess `preexec_fn` that makes the child receive `sig` when this process dies
    (Linux only; None elsewhere or off the main thread, where the signal would come when the
    starting *thread* ends). Everything it needs is looked up before the fork."""
    prctl = _get_prctl()
    if prctl is None or threading.current_thread() is not threading.main_thread():
        return None
    parent = os.getpid()

    def preexec() -> None:
        prctl(PR_SET_PDEATHSIG, int(sig), 0, 0, 0)
        if os.getppid() != parent:  # the parent died before prctl took effect
            os.kill(os.getpid(), int(sig))

    return preexec


def port_in_use(port: int, host: str = "127.0.0.1") -> bool:
    """True if binding host:port fails with EADDRINUSE (bound the way anvil binds, with
    SO_REUSEADDR, so a port with only TIME_WAIT connections counts as free)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError as e:
            return e.errno == errno.EADDRINUSE
    return False


def find_anvil() -> str:
    """ANVIL_BIN, else <repo>/node_modules/@foundry-rs/anvil-linux-amd64/bin/anvil, else PATH."""
    env = os.environ.get("ANVIL_BIN")
    if env:
        if os.path.isfile(env) and os.access(env, os.X_OK):
            return env
        raise DevnetError(f"ANVIL_BIN={env!r} is not an executable file")
    if DEFAULT_ANVIL.is_file() and os.access(DEFAULT_ANVIL, os.X_OK):
        return str(DEFAULT_ANVIL)
    found = shutil.which("anvil")
    if found:
        return found
    raise DevnetError(
        "anvil not found: set ANVIL_BIN, run `npm ci` in the repository root "
        f"(expects {DEFAULT_ANVIL}), or put anvil on PATH"
    )


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _tail(path: Path, n: int = 20) -> str:
    try:
        lines = path.read_text(errors="replace").splitlines()
    except OSError:
        return "(no log)"
    return "\n".join(lines[-n:])


class Anvil:
    def __init__(
        self,
        port: int = 8545,
        state_load: Path | None = None,
        state_dump: Path | None = None,
        log_path: Path | None = None,
        extra_args: Sequence[str] = (),
        *,
        start_timeout_s: float = 20.0,
        die_with_parent: bool = True,
    ):
        self.port = port
        self.state_load = Path(state_load) if state_load else None
        self.state_dump = Path(state_dump) if state_dump else None
        self.log_path = Path(log_path) if log_path else REPO_ROOT / ".devnet" / "anvil.log"
        self.extra_args = list(extra_args)
        self.start_timeout_s = start_timeout_s
        self.die_with_parent = die_with_parent
        self.proc: subprocess.Popen | None = None
        self._log_file = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def command(self) -> list[str]:
        cmd = [
            find_anvil(),
            "--host", "127.0.0.1",
            "--port", str(self.port),
            "--chain-id", str(CHAIN_ID),
            "--mnemonic", DEFAULT_MNEMONIC,
            "--accounts", "10",
            # anvil moves old block states to a temp dir under ~/.foundry/anvil/tmp and leaves
            # it behind when killed: over a day of test runs that reached 77 GB. States older
            # than the in-memory ones are never read by the keeper or the tests: keep none.
            "--max-persisted-states", "0",
        ]
        if self.state_load is not None:
            if not self.state_load.is_file():
                raise DevnetError(f"anvil state file not found: {self.state_load}")
            cmd += ["--load-state", str(self.state_load)]
        if self.state_dump is not None:
            cmd += ["--dump-state", str(self.state_dump)]
        return cmd + self.extra_args

    def start(self) -> "Anvil":
        if self.proc is not None and self.proc.poll() is None:
            raise RuntimeError(f"anvil already running on {self.url}")
        if self.port == 0:
            self.port = free_port()
        elif port_in_use(self.port):
            raise PortInUseError(self.port)
        cmd = self.command()
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        self._log_file = open(self.log_path, "wb")
        self.proc = subprocess.Popen(
            cmd,
            stdin=subprocess.DEVNULL,
            stdout=self._log_file,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # a Ctrl-C in the terminal does not hit anvil mid-dump
            preexec_fn=parent_death_preexec() if self.die_with_parent else None,
        )
        try:
            self._wait_ready()
        except BaseException:
            self.stop()
            raise
        return self

    def _wait_ready(self) -> None:
        deadline = time.monotonic() + self.start_timeout_s
        body = json.dumps({"jsonrpc": "2.0", "id": 1, "method": "eth_chainId", "params": []}).encode()
        delay = 0.005
        while True:
            assert self.proc is not None
            rc = self.proc.poll()
            if rc is not None:
                if "address already in use" in _tail(self.log_path).lower():
                    raise PortInUseError(self.port)
                raise DevnetError(
                    f"anvil exited with code {rc} while starting on port {self.port} "
                    f"(log {self.log_path}):\n{_tail(self.log_path)}"
                )
            # "Listening on" proves that *this* process bound the port (a node already on the
            # port would answer eth_chainId too, while ours exits with "address in use").
            if not self._listening():
                if time.monotonic() > deadline:
                    raise DevnetError(
                        f"anvil did not start listening on {self.url} within {self.start_timeout_s}s "
                        f"(log {self.log_path}):\n{_tail(self.log_path)}"
                    )
                time.sleep(delay)
                delay = min(delay * 1.5, 0.1)
                continue
            try:
                req = urllib.request.Request(self.url, body, {"Content-Type": "application/json"})
                with urllib.request.urlopen(req, timeout=1.0) as resp:
                    answer = json.loads(resp.read())
                if int(answer["result"], 16) != CHAIN_ID:
                    raise DevnetError(
                        f"something else answers on {self.url} (chain id {answer['result']}); "
                        "is the port already in use?"
                    )
                return
            except (urllib.error.URLError, ConnectionError, OSError, KeyError, ValueError):
                pass
            if time.monotonic() > deadline:
                raise DevnetError(
                    f"anvil did not answer eth_chainId on {self.url} within {self.start_timeout_s}s "
                    f"(log {self.log_path}):\n{_tail(self.log_path)}"
                )
            time.sleep(delay)
            delay = min(delay * 1.5, 0.1)

    def _listening(self) -> bool:
        try:
            with open(self.log_path, "rb") as f:
                head = f.read(262144)
        except OSError:
            return False
        return f"Listening on 127.0.0.1:{self.port}".encode() in head

    def stop(self, timeout_s: float = 30.0) -> None:
        """SIGTERM (anvil writes --dump-state then), wait, SIGKILL as a fallback."""
        proc, self.proc = self.proc, None
        if proc is not None:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
                try:
                    proc.wait(timeout=timeout_s)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait(timeout=10)
        if self._log_file is not None:
            self._log_file.close()
            self._log_file = None

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def __enter__(self) -> "Anvil":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    def __del__(self) -> None:  # last resort: never leave a node behind
        try:
            if self.proc is not None and self.proc.poll() is None:
                self.proc.kill()
        except Exception:
            pass
