"""`keeper fork`: anvil forking a chain at a block, to run the keeper against it safely.

    keeper fork --fork-url URL [--fork-block N] [--port P] [--config FILE]
                [--fund ADDRESS] [--deploy-liquidator] [--detach]
    keeper fork down [--port P]

Starts the anvil the project installs (keeper/devnet/anvil.py find_anvil, with
`--max-persisted-states 0` like the devnet) forking URL at block N (default: the source's
head when the command starts, pinned so the printed block is exact). The fork keeps the
source's chain id, so a config written for that chain works unchanged against it.

- `--fund ADDRESS` (default with --config: its keeper.address) gets 10,000 ETH on the fork and
  is impersonated (eth_sendTransaction from it needs no key on the fork).
- `--deploy-liquidator` (needs --config) deploys the keeper's own contracts on the fork from
  that impersonated address (so it owns them), one per enabled protocol that needs one
  (keeper/liquidators.py: an Aave pool's FlashLiquidator, the MorphoLiquidator, Maker's
  TakeCallee), and prints the KEEPER_PROTOCOLS__<i>__<KEY> overrides (FLASH_LIQUIDATOR,
  LIQUIDATOR, TAKE_CALLEE) that point the keeper at them.
- Then it prints the environment for `keeper run` (KEEPER_RPC_URL / KEEPER_WS_URL of the fork,
  dry-run and live lines) and runs in the foreground until Ctrl-C, SIGTERM or SIGHUP, which
  stop anvil (exit 0), as `keeper devnet up` does; anvil also dies with this process if it is
  killed outright. `--detach` leaves anvil running (recorded in .devnet/fork-<port>.json)
  until `keeper fork down`.

The source URL is never printed whole (redact.redact_url); anvil writes it into its log at
start-up, so that line is overwritten in place once anvil is up. It is on anvil's command
line, which local users can see (`ps`): anvil has no other way to take it.
"""

from __future__ import annotations

import json
import os
import signal
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any, Callable

from .devnet.anvil import DEFAULT_MNEMONIC, Anvil, DevnetError, find_anvil, free_port
from .devnet_cli import wait_for_signal
from .errors import ConfigError, KeeperError, TransientError
from .redact import redact_url

REPO = Path(__file__).resolve().parent.parent
RUN_DIR = REPO / ".devnet"
DEFAULT_PORT = 8546  # beside a devnet on 8545
FUND_WEI = 10_000 * 10**18
DEV_CHAIN_ID = 31337


class ForkStopped(KeeperError):
    """The foreground fork's anvil went away without being asked to."""


def add_arguments(p: Any, int_in: Callable[[int, int], Callable[[str], int]]) -> None:
    p.add_argument("action", nargs="?", choices=["down"],
                   help="'down': stop the detached fork(s) (only --port P's if given)")
    p.add_argument("--fork-url", default=None, metavar="URL", help="the chain to fork (an archive node for old blocks)")
    p.add_argument("--fork-block", type=int_in(0, 10**12), default=None, metavar="N",
                   help="fork at this block (default: the source's head)")
    p.add_argument("--port", type=int_in(0, 65535), default=None,
                   help=f"the fork's port (default {DEFAULT_PORT}; 0: a free one)")
    p.add_argument("--config", default=None, metavar="FILE",
                   help="the keeper config for that chain: its keeper.address is funded, its Aave pools get a liquidator")
    p.add_argument("--fund", default=None, metavar="ADDRESS",
                   help="give this address 10,000 ETH on the fork and impersonate it (default: the config's keeper.address)")
    p.add_argument("--deploy-liquidator", action="store_true",
                   help="deploy the keeper's FlashLiquidator on the fork from the funded address (needs --config)")
    p.add_argument("--detach", action="store_true", help="run in the background; stop with 'keeper fork down'")


def dispatch(args: Any) -> int:
    if args.action == "down":
        if args.fork_url or args.fork_block is not None or args.fund or args.deploy_liquidator or args.detach:
            raise ConfigError("'keeper fork down' takes only --port")
        return down(args.port)
    return up(args)


# --- the source chain ------------------------------------------------------------------------

def _source_call(url: str, method: str, params: list[Any] | None = None, timeout_s: float = 30.0) -> Any:
    """One JSON-RPC call to the source (http or https); errors name the host only."""
    shown = redact_url(url)
    body = json.dumps({"jsonrpc": "2.0", "id": 1, "method": method, "params": params or []}).encode()
    req = urllib.request.Request(url, body, {"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=timeout_s) as resp:
            reply = json.loads(resp.read())
    except urllib.error.HTTPError as e:
        raise TransientError(f"--fork-url: {shown} answered HTTP {e.code} to {method}") from None
    except (urllib.error.URLError, OSError) as e:
        reason = getattr(e, "reason", e)
        raise TransientError(f"--fork-url: cannot reach {shown}: {type(reason).__name__}") from None
    except ValueError:
        raise TransientError(f"--fork-url: {shown} did not answer JSON-RPC to {method}") from None
    if not isinstance(reply, dict) or "result" not in reply:
        raise TransientError(f"--fork-url: {shown} refused {method}")
    return reply["result"]


def source_head(url: str) -> tuple[int, int]:
    """(chain id, latest block number) of the source."""
    return int(_source_call(url, "eth_chainId"), 16), int(_source_call(url, "eth_blockNumber"), 16)


# --- the fork node ---------------------------------------------------------------------------

class ForkAnvil(Anvil):
    """anvil --fork-url URL --fork-block-number N, the source's chain id kept."""

    def __init__(self, fork_url: str, fork_block: int, chain_id: int, port: int, log_path: Path,
                 die_with_parent: bool = True):
        super().__init__(port=port, log_path=log_path, start_timeout_s=120.0, die_with_parent=die_with_parent)
        self.fork_url = fork_url
        self.fork_block = fork_block
        self.chain_id = chain_id

    def command(self) -> list[str]:
        cmd = [
            find_anvil(),
            "--host", "127.0.0.1",
            "--port", str(self.port),
            "--fork-url", self.fork_url,
            "--fork-block-number", str(self.fork_block),
            "--mnemonic", DEFAULT_MNEMONIC,
            "--accounts", "10",
            "--max-persisted-states", "0",  # as the devnet: no old states left behind on disk
        ]
        if self.chain_id == DEV_CHAIN_ID:  # a local chain's state changes under the same block numbers
            cmd.append("--no-storage-caching")
        return cmd + self.extra_args

    def _wait_ready(self) -> None:
        """Listening, and answering eth_chainId with the source's chain id."""
        deadline = time.monotonic() + self.start_timeout_s
        while True:
            assert self.proc is not None
            rc = self.proc.poll()
            if rc is not None:
                self.hide_source_url()
                if "address already in use" in _tail(self.log_path).lower():
                    from .devnet.anvil import PortInUseError

                    raise PortInUseError(self.port)
                raise DevnetError(f"anvil exited with code {rc} while forking {redact_url(self.fork_url)} "
                                  f"(log {self.log_path}): {_tail(self.log_path, 3)}")
            if self._listening():
                try:
                    got = int(_source_call(self.url, "eth_chainId", timeout_s=5.0), 16)
                except TransientError:
                    got = None
                if got is not None:
                    if got != self.chain_id:
                        raise DevnetError(f"something else answers on {self.url} (chain id {got}); is the port in use?")
                    self.hide_source_url()
                    return
            if time.monotonic() > deadline:
                self.hide_source_url()
                raise DevnetError(f"the fork did not answer on {self.url} within {self.start_timeout_s:.0f}s "
                                  f"(log {self.log_path})")
            time.sleep(0.05)

    def hide_source_url(self) -> None:
        """anvil prints the fork URL (with any key in it) at start-up: overwrite it in the log,
        in place and at the same length (anvil keeps writing at its own offset)."""
        secret = self.fork_url.encode()
        shown = redact_url(self.fork_url).encode()
        try:
            with open(self.log_path, "r+b") as f:
                data = f.read(1 << 20)
                at = data.find(secret)
                while at >= 0:
                    f.seek(at)
                    f.write(shown[: len(secret)].ljust(len(secret)))
                    at = data.find(secret, at + len(secret))
        except OSError:
            pass


def _tail(path: Path, n: int = 20) -> str:
    try:
        lines = path.read_text(errors="replace").splitlines()
    except OSError:
        return "(no log)"
    return " | ".join(line.strip() for line in lines[-n:] if line.strip())


def _local(url: str, method: str, params: list[Any] | None = None) -> Any:
    """A call to the fork itself (errors are the node's, shown as they are)."""
    body = json.dumps({"jsonrpc": "2.0", "id": 1, "method": method, "params": params or []}).encode()
    req = urllib.request.Request(url, body, {"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=120) as resp:
        reply = json.loads(resp.read())
    if "error" in reply:
        raise KeeperError(f"fork: {method}: {reply['error'].get('message')}")
    return reply["result"]


async def close_run(keeper: Any, node: ForkAnvil, tmp: Any, keep_log: bool = False) -> None:
    """The end of a run on a fork (keeper replay, keeper stress): close the keeper (None: not
    made yet), stop the fork's anvil, remove the run's temporary directory (a
    tempfile.TemporaryDirectory) and, unless keep_log, the node's log."""
    try:
        if keeper is not None:
            await keeper.close()
    finally:
        node.stop()
        tmp.cleanup()
        if not keep_log:
            node.log_path.unlink(missing_ok=True)


def fund(url: str, address: str, wei: int = FUND_WEI) -> None:
    """Give `address` `wei` on the fork and impersonate it."""
    _local(url, "anvil_setBalance", [address, hex(wei)])
    _local(url, "anvil_impersonateAccount", [address])


def deploy_liquidators(url: str, cfg: Any, owner: str) -> list[tuple[Any, str]]:
    """The keeper's own contracts for each enabled protocol that needs one (keeper/liquidators.py:
    Aave FlashLiquidator, MorphoLiquidator, Maker TakeCallee), sent from the impersonated
    `owner` on the fork. Returns (liquidators.Target, address)."""
    from . import abi, liquidators

    def call(to: str, data: bytes) -> bytes:
        out = _local(url, "eth_call", [{"to": to, "data": "0x" + data.hex()}, "latest"])
        return bytes.fromhex(out[2:]) if isinstance(out, str) else b""

    out = []
    for t in liquidators.targets(cfg, call, owner):
        tx_hash = _local(url, "eth_sendTransaction", [{"from": owner, "data": t.code(liquidators.bytecode(t)),
                                                       "gas": hex(8_000_000)}])
        rc = None
        for _ in range(600):
            rc = _local(url, "eth_getTransactionReceipt", [tx_hash])
            if rc:
                break
            _local(url, "evm_mine")  # a fork with automine off
            time.sleep(0.05)
        if not rc or rc.get("status") != "0x1":
            raise KeeperError(f"{t.contract} deployment for {t.name} failed on the fork ({tx_hash})")
        out.append((t, abi.to_checksum(rc["contractAddress"])))
    return out


# --- the command -----------------------------------------------------------------------------

def run_file(port: int) -> Path:
    return RUN_DIR / f"fork-{port}.json"


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except OSError:
        return False
    return True


def running() -> list[dict[str, Any]]:
    """The detached forks still running (stale records removed)."""
    out = []
    for f in sorted(RUN_DIR.glob("fork-*.json")):
        try:
            info = json.loads(f.read_text())
            pid = int(info["pid"])
        except (OSError, ValueError, KeyError, TypeError):
            f.unlink(missing_ok=True)
            continue
        if _alive(pid):
            out.append(info)
        else:
            f.unlink(missing_ok=True)
    return out


def _checked_address(text: str, what: str) -> str:
    from eth_utils import is_address, to_checksum_address

    if not is_address(text.strip()):
        raise ConfigError(f"{what}: not an address: {text.strip()[:60]!r} (0x and 40 hex digits)")
    return to_checksum_address(text.strip())


def up(args: Any) -> int:
    if not args.fork_url:
        raise ConfigError("--fork-url is required (the chain to fork), or 'keeper fork down'")
    url = args.fork_url.strip()
    shown = redact_url(url)
    if shown == "<invalid URL>" or not url.lower().startswith(("http://", "https://", "ws://", "wss://")):
        raise ConfigError(f"--fork-url: not an http(s) or ws(s) URL: {shown}")
    cfg = None
    if args.config:
        from .config import load_config

        cfg = load_config(args.config)
    if args.deploy_liquidator and cfg is None:
        raise ConfigError("--deploy-liquidator needs --config FILE (its protocols and swap.router)")
    who = _checked_address(args.fund, "--fund") if args.fund else (cfg.keeper.address if cfg else None)
    if args.deploy_liquidator and who is None:
        raise ConfigError("--deploy-liquidator needs an owner: --fund ADDRESS or keeper.address in the config")
    port = DEFAULT_PORT if args.port is None else args.port
    port = free_port() if port == 0 else port

    chain_id, head = source_head(url)
    if cfg is not None and cfg.chain.chain_id is not None and cfg.chain.chain_id != chain_id:
        raise ConfigError(f"--config: chain.chain_id is {cfg.chain.chain_id} but {shown} is chain {chain_id}")
    block = head if args.fork_block is None else args.fork_block
    if block > head:
        raise ConfigError(f"--fork-block {block} is after the source's head ({head})")

    log_path = RUN_DIR / f"fork-{port}.log"
    node = ForkAnvil(url, block, chain_id, port, log_path, die_with_parent=not args.detach)
    t0 = time.monotonic()
    node.start()
    try:
        os.chmod(log_path, 0o600)
        if who:
            fund(node.url, who)
        deployed = deploy_liquidators(node.url, cfg, who) if args.deploy_liquidator else []
        _print_env(node.url, shown, block, chain_id, who, deployed, cfg, args.config, time.monotonic() - t0)
        if args.detach:
            run_file(port).write_text(json.dumps({"pid": node.proc.pid, "port": port, "url": node.url,
                                                  "source": shown, "block": block, "chain_id": chain_id}))
            node.proc = None  # leave it running; 'keeper fork down' stops it
            print(f"detached; stop it with: keeper fork down --port {port}", flush=True)
            return 0
        stopped = wait_for_signal(node)
    finally:
        node.stop()  # a no-op once detached
    if not stopped:
        raise ForkStopped(f"the fork's anvil on {node.url} exited on its own (log {log_path})")
    print("fork stopped", flush=True)
    return 0


def _print_env(url: str, source: str, block: int, chain_id: int, who: str | None,
               deployed: list[tuple[Any, str]], cfg: Any, config_path: str | None, took: float) -> None:
    ws = "ws://" + url.removeprefix("http://")
    print(f"fork of {source} at block {block} (chain id {chain_id}) ready on {url} in {took:.2f}s")
    if who:
        print(f"funded with {FUND_WEI // 10**18:,} ETH and impersonated: {who}")
    for t, addr in deployed:
        print(f"{t.contract} for {t.name} deployed at {addr} (owner {who})")
    print("anvil's test accounts (mnemonic \"test test ... junk\") also hold 10,000 ETH each")
    print("point the keeper at the fork:")
    print(f"  export KEEPER_RPC_URL={url}")
    print(f"  export KEEPER_WS_URL={ws}")
    for t, addr in deployed:
        print(f"  export KEEPER_PROTOCOLS__{t.index}__{t.key.upper()}={addr}")
    conf = config_path or "FILE"
    print(f"  keeper run --config {conf} --dry-run   # simulates and logs, sends nothing, needs no key")
    print(f"  keeper run --config {conf}             # live on the fork: signs locally with the key in "
          "keeper.private_key_env, so that key's address must hold the gas (--fund it)")
    if cfg is not None and cfg.relay is not None:
        print("warning: this config sends through private relays ([relay]): remove that section for the fork, "
              "or the fork's transactions go to the real relays")
    print("", flush=True)


def down(port: int | None) -> int:
    forks = [f for f in running() if port is None or f.get("port") == port]
    if not forks:
        print("no fork running" + (f" on port {port}" if port is not None else ""))
        return 0
    for info in forks:
        stop_pid(int(info["pid"]))
        run_file(info["port"]).unlink(missing_ok=True)
        print(f"fork on port {info['port']} stopped")
    return 0


def stop_pid(pid: int) -> None:
    """SIGTERM, wait up to 5 s, then SIGKILL."""
    try:
        os.kill(pid, signal.SIGTERM)
    except OSError:
        return
    for _ in range(100):
        if not _alive(pid):
            return
        try:  # our own child (in-process callers): reap it so it does not linger as a zombie
            if os.waitpid(pid, os.WNOHANG)[0] == pid:
                return
        except ChildProcessError:
            pass
        time.sleep(0.05)
    try:
        os.kill(pid, signal.SIGKILL)
    except OSError:
        pass
