"""The keeper as it is shipped: the wheel installed outside the source tree, the Docker image's
and docker-compose's keeper commands and config, the Grafana dashboard's metric names.

No Docker engine runs on the build machines, so the image is not built here: the wheel the
image installs is built and installed into a fresh venv instead, and the Docker files are
checked statically (every keeper command parses, the config they mount validates with the
environment compose gives it, `docker-compose config` accepts the files)."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import sysconfig
import time
import tomllib
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from .conftest import DEVNET_CONFIG, REPO, only_env

EXAMPLE_CONFIG = REPO / "deploy" / "keeper.toml.example"
COMPOSE = REPO / "docker-compose.yml"
COMPOSE_LIVE = REPO / "deploy" / "docker-compose.live.yml"
DASHBOARD = REPO / "deploy" / "grafana" / "dashboards" / "keeper.json"
# the metric names keeper/metrics.py exposes (histograms also as _bucket, _sum, _count)
METRICS = {"keeper_head_block", "keeper_head_lag_seconds", "keeper_gas_spent_eth_total", "keeper_paused",
           "keeper_opportunities_total", "keeper_sends_total", "keeper_realized_profit_usd_total",
           "keeper_wallet_balance", "keeper_rpc_errors_total", "keeper_tracked_accounts", "keeper_misses_total"}
HISTOGRAMS = {"keeper_cycle_seconds", "keeper_stage_seconds", "keeper_rpc_latency_seconds"}
SERIES = METRICS | {h + s for h in HISTOGRAMS for s in ("_bucket", "_sum", "_count")}
# what compose interpolates for the variables it requires (the test's stand-ins)
COMPOSE_VARS = {"KEEPER_RPC_URL": "http://anvil:8545"}


def _clean_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("KEEPER_", "PYTHON", "PIP_", "VIRTUAL_ENV")) and k != "__PYVENV_LAUNCHER__"}
    env.update(extra)
    return env


# -- the wheel, installed outside the source tree -------------------------------------------
@pytest.fixture(scope="module")
def installed(tmp_path_factory) -> Path:
    """A fresh venv (outside the source tree) holding the keeper wheel built from this tree;
    its dependencies come from the project's .venv through a .pth line (no network), which
    adds only that site-packages directory: the .venv's editable-install hook is not run."""
    import setuptools

    if tuple(int(x) for x in setuptools.__version__.split(".")[:2]) < (70, 1):
        pytest.fail(f"setuptools {setuptools.__version__} in the .venv cannot build a wheel offline "
                    "(needs 70.1+, the test extra: run ./dev setup)")
    root = tmp_path_factory.mktemp("packaging")
    src = root / "src"  # a copy, so the build writes nothing into the source tree
    src.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy2(REPO / name, src / name)
    shutil.copytree(REPO / "keeper", src / "keeper", ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    dist = root / "dist"
    pip = [sys.executable, "-m", "pip", "--disable-pip-version-check", "--no-input"]
    p = subprocess.run([*pip, "wheel", "--no-deps", "--no-build-isolation", "--no-index", "-q", "-w", str(dist), str(src)],
                       cwd=root, env=_clean_env(), capture_output=True, text=True, timeout=180)
    assert p.returncode == 0, p.stdout + p.stderr
    wheels = list(dist.glob("keeper-*.whl"))
    assert len(wheels) == 1, wheels
    venv = root / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True, timeout=60)
    py = venv / "bin" / "python"
    p = subprocess.run([*pip, "--python", str(py), "install", "--no-deps", "--no-index", "-q", str(wheels[0])],
                       cwd=root, env=_clean_env(), capture_output=True, text=True, timeout=180)
    assert p.returncode == 0, p.stdout + p.stderr
    site = Path(subprocess.run([str(py), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                               capture_output=True, text=True, check=True).stdout.strip())
    (site / "zz_project_deps.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    return venv


def test_the_wheel_ships_the_abis_and_the_status_page(installed):
    code = ("import keeper, keeper.abi as a, importlib.resources as r; print(keeper.__file__); "
            "a.load('ERC20'); a.load('PerpsMarket'); print(len(a.custom_errors())); "
            "print(len(r.files('keeper').joinpath('web', 'status.html').read_bytes()))")
    p = subprocess.run([str(installed / "bin" / "python"), "-c", code], cwd=installed.parent, env=_clean_env(),
                       capture_output=True, text=True, timeout=60)
    assert p.returncode == 0, p.stderr
    where, n_errors, page = p.stdout.split()
    assert Path(where).resolve().is_relative_to(installed.resolve()), f"imported {where}, not the installed copy"
    assert int(n_errors) > 0 and int(page) > 1000


def test_installed_keeper_dry_run_once_from_another_directory(installed, chain, tmp_path):
    chain.shock("WETH", -12)
    cfg = tmp_path / "devnet.toml"
    shutil.copy2(DEVNET_CONFIG, cfg)
    env = _clean_env(KEEPER_RPC_URL=chain.url, **only_env("aave-v3-devnet"))
    p = subprocess.run([str(installed / "bin" / "keeper"), "run", "--config", str(cfg), "--dry-run", "--once"],
                       cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)
    assert p.returncode == 0, p.stderr[-3000:]
    events = [json.loads(line)["event"] for line in p.stdout.splitlines() if line.startswith("{")]
    assert events.count("opportunity") >= 1 and "dry_run_send" in events, p.stdout[-3000:]
    assert "liquidation_sent" not in events


def test_installed_keeper_says_deploy_liquidator_needs_a_source_checkout(installed, tmp_path):
    cfg = tmp_path / "devnet.toml"
    shutil.copy2(DEVNET_CONFIG, cfg)
    p = subprocess.run([str(installed / "bin" / "keeper"), "deploy-liquidator", "--config", str(cfg)],
                       cwd=tmp_path, env=_clean_env(KEEPER_RPC_URL="http://127.0.0.1:9"),
                       capture_output=True, text=True, timeout=60)
    assert p.returncode == 2
    lines = p.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error:") and "source checkout" in lines[0], p.stderr


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _uses_http_server() -> bool:
    return any(re.search(r"\bServer\(", (REPO / "keeper" / f).read_text()) for f in ("app.py", "cli.py"))


def test_installed_keeper_answers_the_image_healthcheck(installed, chain, tmp_path):
    """`keeper run` from the wheel with [http] set (as the example config sets it) serves the
    route the Dockerfile's HEALTHCHECK requests, the metrics and the status page."""
    if not _uses_http_server():
        pytest.skip("keeper run does not start the [http] server yet (keeper/server.py not wired in app.py/cli.py)")
    port = _free_port()
    cfg = tmp_path / "devnet.toml"
    shutil.copy2(DEVNET_CONFIG, cfg)
    env = _clean_env(KEEPER_RPC_URL=chain.url, KEEPER_HTTP__LISTEN=f"127.0.0.1:{port}", **only_env("aave-v3-devnet"))
    proc = subprocess.Popen([str(installed / "bin" / "keeper"), "run", "--config", str(cfg), "--dry-run"],
                            cwd=tmp_path, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    check = _dockerfile_healthcheck().replace("127.0.0.1:9108", f"127.0.0.1:{port}")
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=2) as r:
                    metrics = r.read().decode()
                if "keeper_head_block " in metrics:
                    break
            except OSError:
                pass
            assert proc.poll() is None, proc.stderr.read()[-2000:]
            assert time.monotonic() < deadline, "no /metrics within 60 s"
            time.sleep(0.3)
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=5) as r:
            assert b"<html" in r.read().lower()
        argv = json.loads(check)
        assert argv[0] == "python"
        hc = subprocess.run([str(installed / "bin" / "python"), *argv[1:]], env=_clean_env(), capture_output=True,
                            text=True, timeout=10)
        # 0, or 503 with the reason (a devnet's head can be older than the head-age limit)
        assert hc.returncode == 0 or "HTTP Error 503" in hc.stderr, hc.stderr
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            assert proc.wait(timeout=30) == 0
        finally:
            if proc.poll() is None:
                proc.kill()


# -- the Docker files -------------------------------------------------------------------------
def _dockerfile() -> dict[str, str]:
    """Dockerfile instruction -> its argument text for the last stage (continuations joined)."""
    text = re.sub(r"\\\n\s*", " ", (REPO / "Dockerfile").read_text())
    stages = re.split(r"(?m)^FROM\s", text)
    out: dict[str, str] = {}
    for line in stages[-1].splitlines():
        m = re.match(r"([A-Z]+)\s+(.*)", line.strip())
        if m:
            out[m[1]] = out.get(m[1], "") + ("\n" if m[1] in out else "") + m[2]
    return out


def _dockerfile_healthcheck() -> str:
    hc = _dockerfile()["HEALTHCHECK"]
    return hc[hc.index("CMD") + 3:].strip()


def _services(path: Path) -> dict[str, list[str]]:
    """The top-level services of a compose file, each as its lines (block by indentation)."""
    out: dict[str, list[str]] = {}
    cur = None
    in_services = False
    for line in path.read_text().splitlines():
        if re.match(r"^\S", line):
            in_services = line.startswith("services:")
            cur = None
            continue
        m = re.match(r"^  ([A-Za-z0-9_-]+):\s*$", line)
        if in_services and m:
            cur = m[1]
            out[cur] = []
        elif in_services and cur:
            out[cur].append(line)
    return out


def _flow_list(lines: list[str], key: str) -> list[str]:
    """A one-line `key: [...]` flow sequence of double-quoted strings (JSON-compatible)."""
    found = [ln.split(":", 1)[1].strip() for ln in lines if re.match(rf"^\s+{key}:\s*\[", ln)]
    assert len(found) == 1, f"expected one one-line `{key}: [...]`, got {found}"
    return json.loads(found[0])


def _environment(lines: list[str]) -> dict[str, str]:
    env: dict[str, str] = {}
    block = False
    for ln in lines:
        if re.match(r"^    environment:\s*$", ln):
            block = True
            continue
        if block and re.match(r"^      [A-Z_][A-Z0-9_]*:", ln):
            k, v = ln.strip().split(":", 1)
            env[k] = v.strip()
        elif block and not ln.startswith("      "):
            block = False
    return env


def _interpolate(value: str) -> str:
    """Compose's ${VAR}, ${VAR:-default}, ${VAR:?error} with the test's stand-ins."""
    def sub(m: re.Match) -> str:
        name, op, arg = m[1], m[2] or "", m[3] or ""
        if name in COMPOSE_VARS:
            return COMPOSE_VARS[name]
        assert op != ":?", f"compose requires ${name}: add it to COMPOSE_VARS"
        return arg if op == ":-" else ""

    return re.sub(r"\$\{([A-Z_][A-Z0-9_]*)(?:(:-|:\?)([^}]*))?\}", sub, value)


def _keeper_argv_and_config() -> list[tuple[str, list[str], dict[str, str]]]:
    """(where, keeper argv, environment) for every way the files start the keeper."""
    df = _dockerfile()
    entry = json.loads(df["ENTRYPOINT"])
    assert entry == ["keeper"], entry
    out = [("Dockerfile CMD", json.loads(df["CMD"]), {})]
    base = _services(COMPOSE)["keeper"]
    base_env = {k: _interpolate(v) for k, v in _environment(base).items()}
    out.append(("docker-compose.yml keeper", _flow_list(base, "command"), base_env))
    live = _services(COMPOSE_LIVE)["keeper"]
    live_env = {**base_env, **{k: _interpolate(v) for k, v in _environment(live).items()}}
    out.append(("deploy/docker-compose.live.yml keeper", _flow_list(live, "command"), live_env))
    return out


def test_every_keeper_command_in_the_docker_files_parses_and_its_config_validates():
    from keeper.cli import _parser
    from keeper.config import load_config

    # compose mounts ./deploy/keeper.toml (made from the example) where the image's CMD looks
    base = _services(COMPOSE)["keeper"]
    text = "\n".join(base)
    assert re.search(r"source: \./deploy/keeper\.toml\n\s+target: /config/keeper\.toml\n\s+read_only: true", text), text
    assert re.search(r"- keeper-data:/data\b", text)
    mounted = {"/config/keeper.toml": EXAMPLE_CONFIG}
    runs = _keeper_argv_and_config()
    for where, argv, env in runs:
        try:
            ns = _parser().parse_args(argv)
        except SystemExit as e:
            pytest.fail(f"{where}: `keeper {' '.join(argv)}` does not parse (exit {e.code})")
        assert ns.cmd == "run", where
        assert ns.config in mounted, f"{where}: --config {ns.config} is not the mounted config"
        cfg = load_config(mounted[ns.config], environ=env)
        assert cfg.http is not None and (cfg.http.host, cfg.http.port) == ("0.0.0.0", 9108), where
        for p in (cfg.keeper.journal, cfg.keeper.store_path, cfg.keeper.kill_switch_file):
            assert p is not None and str(p).startswith("/data/"), f"{where}: state outside the /data volume: {p}"
    # dry-run unless the live override is used; the live one loads the key from secrets only
    assert [ns for _, argv, _ in runs for ns in [_parser().parse_args(argv)]][0].dry_run
    assert _parser().parse_args(runs[1][1]).dry_run and not _parser().parse_args(runs[2][1]).dry_run
    live_env = runs[2][2]
    assert live_env["KEEPER_KEEPER__KEYSTORE"].startswith("/run/secrets/")
    assert live_env["KEEPER_KEEPER__PASSWORD_FILE"].startswith("/run/secrets/")
    assert not any("PRIVATE_KEY" in k for _, _, env in runs for k in env)


def test_the_live_override_secrets_load_the_key(tmp_path):
    """The keystore + password route compose's secrets use: the env the live override sets,
    pointed at files made as its header says, gives the signer."""
    from eth_account import Account

    from keeper.config import load_config, load_signer

    from .conftest import KEEPER, KEEPER_KEY

    ks, pw = tmp_path / "keeper_keystore", tmp_path / "keeper_password"
    ks.write_text(json.dumps(Account.encrypt(KEEPER_KEY, "correct horse", kdf="pbkdf2", iterations=2)))
    pw.write_text("correct horse")
    env = {k: v.replace("/run/secrets/", f"{tmp_path}/") for k, v in _keeper_argv_and_config()[2][2].items()}
    cfg = load_config(EXAMPLE_CONFIG, environ=env)
    assert load_signer(cfg.keeper, environ={}).address == KEEPER


def test_dockerfile_healthcheck_exposes_and_volumes():
    df = _dockerfile()
    assert df["EXPOSE"].split() == ["9108"]
    assert json.loads(df["VOLUME"]) == ["/data"]
    assert df["USER"] not in ("root", "0")
    check = json.loads(_dockerfile_healthcheck())
    assert check[:2] == ["python", "-c"] and "http://127.0.0.1:9108/healthz" in check[2]
    compile(check[2], "<healthcheck>", "exec")
    compose_check = _flow_list(_services(COMPOSE)["keeper"], "test")
    assert compose_check == ["CMD", *check]
    assert "127.0.0.1:9108:9108" in "\n".join(_services(COMPOSE)["keeper"])


def test_requirements_lock_pins_the_runtime_dependencies():
    """The image installs requirements.lock with --no-deps: it must pin every runtime
    dependency (pyproject.toml's and theirs), at the versions tested here."""
    import importlib.metadata as md

    from packaging.requirements import Requirement

    def norm(name: str) -> str:
        return re.sub(r"[-_.]+", "-", name).lower()

    pins = {}
    for line in (REPO / "requirements.lock").read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            name, _, version = line.partition("==")
            assert version, f"requirements.lock: not an exact pin: {line}"
            pins[norm(name)] = version
    deps = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["dependencies"]
    todo, need = [Requirement(d) for d in deps], set()
    while todo:
        r = todo.pop()
        if (r.marker and not r.marker.evaluate({"extra": ""})) or norm(r.name) in need:
            continue
        need.add(norm(r.name))
        assert norm(r.name) in pins, f"requirements.lock: {r.name} is missing"
        assert r.specifier.contains(pins[norm(r.name)], prereleases=True), f"{r.name}=={pins[norm(r.name)]} is not {r}"
        todo += [Requirement(q) for q in md.distribution(r.name).requires or []]
    assert set(pins) == need, f"requirements.lock pins what the keeper does not need: {sorted(set(pins) - need)}"
    for name in need:
        assert md.version(name) == pins[name], f"{name}: .venv has {md.version(name)}, requirements.lock {pins[name]}"


def _docker_compose() -> str:
    exe = shutil.which("docker-compose")
    if exe is None:
        if os.environ.get("CI"):
            pytest.fail("docker-compose is not installed: ./dev setup installs it with apt-get in CI")
        pytest.skip("docker-compose is not installed (./dev setup installs the Debian package when apt-get can)")
    return exe


@pytest.mark.parametrize("files,profiles", [
    (["docker-compose.yml"], []),
    (["docker-compose.yml"], ["fork"]),
    (["docker-compose.yml", "deploy/docker-compose.live.yml"], []),
])
def test_docker_compose_config_accepts_the_files(files, profiles):
    exe = _docker_compose()
    args = [exe, *(a for f in files for a in ("-f", f)), *(a for p in profiles for a in ("--profile", p)), "config"]
    env = _clean_env(**COMPOSE_VARS)
    p = subprocess.run(args, cwd=REPO, env=env, capture_output=True, text=True, timeout=60)
    assert p.returncode == 0, p.stderr
    assert "keeper:" in p.stdout and "anvil:" in p.stdout  # docker-compose 1.x lists profiled services too
    env.pop("KEEPER_RPC_URL")
    p = subprocess.run(args, cwd=REPO, env=env, capture_output=True, text=True, timeout=60)
    assert p.returncode != 0 and "KEEPER_RPC_URL" in p.stderr, "KEEPER_RPC_URL must be required"


# -- Prometheus and Grafana ----------------------------------------------------------------
PROMQL_WORDS = {"by", "without", "on", "ignoring", "group_left", "group_right", "bool", "and", "or", "unless",
                "offset", "le", "inf", "nan"}


def _metric_names(expr: str) -> set[str]:
    e = re.sub(r'"(?:[^"\\]|\\.)*"', "", expr)  # strings
    e = re.sub(r"\{[^}]*\}", "", e)  # label matchers
    e = re.sub(r"\[[^\]]*\]", "", e)  # ranges
    e = re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", "", e)  # label lists
    names = set()
    for m in re.finditer(r"[A-Za-z_:][A-Za-z0-9_:]*", e):
        after = e[m.end():].lstrip()
        if after.startswith("(") or m[0].lower() in PROMQL_WORDS:
            continue  # a function or a keyword
        if re.fullmatch(r"[0-9.]*e[0-9]*", m[0]):
            continue
        names.add(m[0])
    return names


def _exprs(node) -> list[str]:
    if isinstance(node, dict):
        return [v for k, v in node.items() if k == "expr" and isinstance(v, str)] + \
            [e for k, v in node.items() for e in _exprs(v)]
    if isinstance(node, list):
        return [e for v in node for e in _exprs(v)]
    return []


def test_grafana_dashboard_names_only_the_keepers_metrics():
    dash = json.loads(DASHBOARD.read_text())
    exprs = _exprs(dash)
    assert len(exprs) >= 10
    used = set()
    for expr in exprs:
        names = _metric_names(expr)
        assert names, f"no metric in {expr!r}"
        assert names <= SERIES, f"{expr!r} names {sorted(names - SERIES)}, not a keeper metric"
        used |= names
    assert {"keeper_head_block", "keeper_paused", "keeper_sends_total", "keeper_stage_seconds_bucket"} <= used
    # every panel's datasource is the provisioned one
    ds = (REPO / "deploy" / "grafana" / "provisioning" / "datasources" / "prometheus.yml").read_text()
    uid = re.search(r"uid:\s*(\S+)", ds)[1]
    assert all(p["datasource"]["uid"] == uid for p in dash["panels"])
    prov = (REPO / "deploy" / "grafana" / "provisioning" / "dashboards" / "keeper.yml").read_text()
    assert "path: /var/lib/grafana/dashboards" in prov
    assert "./deploy/grafana/dashboards:/var/lib/grafana/dashboards" in COMPOSE.read_text()


def test_dashboard_metric_names_are_the_ones_the_keeper_exposes():
    """The list above against keeper/metrics.py, so the dashboard and the code cannot drift."""
    from keeper.metrics import Metrics

    families = set(Metrics().names())  # prometheus_client drops a counter's _total here
    exposed = families | {f + "_total" for f in families}
    missing = (METRICS | HISTOGRAMS) - exposed
    assert not missing, f"keeper/metrics.py does not expose {sorted(missing)}"


def test_prometheus_scrapes_the_keeper_port():
    text = (REPO / "deploy" / "prometheus.yml").read_text()
    assert re.search(r'targets:\s*\["keeper:9108"\]', text) and "metrics_path: /metrics" in text
