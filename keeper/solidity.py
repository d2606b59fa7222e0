"""Compile Solidity with solc-js (the npm ``solc`` package) run through node.

Usage::

    from keeper.solidity import compile_files
    out = compile_files([Path("contracts/Multicall3.sol")])
    out["Multicall3"]["deployedBytecode"]   # "0x..."

The compiler is driven with Solidity's standard JSON interface through a tiny node
script (stdin -> stdout), optimizer on (200 runs by default). Output is cached in
``<repo>/.cache/solc/<sha256>.json`` keyed by the sources, the settings and the
compiler version, so repeated calls take milliseconds.

Errors (compile errors, node or solc missing) raise :class:`RuntimeError` with the
compiler's own message.
"""

from __future__ import annotations

import hashlib
import re
import json
import os
import shutil
import subprocess
import tempfile
from pathlib import Path
from typing import Iterable

REPO_ROOT = Path(__file__).resolve().parents[1]
_IMPORT = re.compile(r'^\s*import\s+(?:[^"\']*\bfrom\s+)?["\']([A-Za-z0-9_]+\.sol)["\']', re.M)
CACHE_DIR = REPO_ROOT / ".cache" / "solc"

# Reads a standard-JSON input on stdin, writes the standard-JSON output on stdout.
# Imports are resolved relative to the directories listed in SOLC_INCLUDE (":"-separated)
# and to node_modules.
_NODE_SCRIPT = r"""
const fs = require('fs');
const path = require('path');
const solc = require(process.env.SOLC_JS_PATH);
const includes = (process.env.SOLC_INCLUDE || '').split(':').filter(Boolean);
function findImports(p) {
  for (const base of includes) {
    const full = path.join(base, p);
    if (fs.existsSync(full)) return { contents: fs.readFileSync(full, 'utf8') };
  }
  return { error: 'File not found: ' + p };
}
let data = '';
process.stdin.setEncoding('utf8');
process.stdin.on('data', (c) => { data += c; });
process.stdin.on('end', () => {
  const out = solc.compile(data, { import: findImports });
  process.stdout.write(out);
});
"""


# npm package names of the solc-js builds in package.json: "solc" (0.8.24, the keeper's own
# contracts) and "solc0819" (an alias of solc@0.8.19, for Morpho Blue's `pragma solidity 0.8.19`)
DEFAULT_SOLC = "solc"


def _solc_dir(package: str = DEFAULT_SOLC) -> Path:
    env = os.environ.get("SOLC_JS_DIR") if package == DEFAULT_SOLC else None
    candidates = [Path(env)] if env else []
    candidates.append(REPO_ROOT / "node_modules" / package)
    for c in candidates:
        if (c / "package.json").is_file():
            return c
    raise RuntimeError(
        "solc-js not found (looked in "
        + ", ".join(str(c) for c in candidates)
        + "); run `npm ci` in the repository root"
    )


def _node_bin() -> str:
    node = os.environ.get("NODE_BIN") or shutil.which("node")
    if not node:
        raise RuntimeError("node not found on PATH (set NODE_BIN); it is needed to run solc-js")
    return node


def solc_version(package: str = DEFAULT_SOLC) -> str:
    return json.loads((_solc_dir(package) / "package.json").read_text())["version"]


def compile_sources(
    sources: dict[str, str],
    *,
    optimizer_runs: int = 200,
    evm_version: str | None = None,
    include_paths: Iterable[Path] = (),
    use_cache: bool = True,
    solc: str = DEFAULT_SOLC,
) -> dict[str, dict]:
    """Compile ``{source_name: source_text}`` with the solc-js build in node_modules/``solc``
    (an npm package name: "solc" or the "solc0819" alias).

    Returns ``{contractName: {"abi": list, "bytecode": "0x..", "deployedBytecode": "0x.."}}``.
    If two sources define the same contract name, the later source name (sorted) wins.
    """
    settings: dict = {
        "optimizer": {"enabled": True, "runs": optimizer_runs},
        "outputSelection": {"*": {"*": ["abi", "evm.bytecode.object", "evm.deployedBytecode.object"]}},
    }
    if evm_version:
        settings["evmVersion"] = evm_version
    std_input = {
        "language": "Solidity",
        "sources": {name: {"content": text} for name, text in sorted(sources.items())},
        "settings": settings,
    }
    input_json = json.dumps(std_input, sort_keys=True)
    version = solc_version(solc)
    key = hashlib.sha256((version + "\n" + input_json).encode()).hexdigest()
    cache_file = CACHE_DIR / f"{key}.json"
    if use_cache and cache_file.is_file():
        try:
            return json.loads(cache_file.read_text())
        except (OSError, json.JSONDecodeError):
            pass  # corrupt cache entry: recompile

    env = dict(os.environ)
    env["SOLC_JS_PATH"] = str(_solc_dir(solc))
    env["SOLC_INCLUDE"] = ":".join(
        [str(Path(p).resolve()) for p in include_paths] + [str(REPO_ROOT / "node_modules")]
    )
    try:
        proc = subprocess.run(
            [_node_bin(), "-e", _NODE_SCRIPT],
            input=input_json,
            capture_output=True,
            text=True,
            env=env,
            timeout=300,
        )
    except FileNotFoundError as e:
        raise RuntimeError(f"cannot run node: {e}") from e
    if proc.returncode != 0:
        raise RuntimeError(f"solc-js failed (exit {proc.returncode}): {proc.stderr.strip()[-2000:]}")
    try:
        output = json.loads(proc.stdout)
    except json.JSONDecodeError as e:
        raise RuntimeError(f"solc-js returned invalid JSON: {proc.stdout[:500]!r} {proc.stderr[-500:]!r}") from e

    errors = [e for e in output.get("errors", []) if e.get("severity") == "error"]
    if errors:
        msg = "\n".join(e.get("formattedMessage") or e.get("message", "") for e in errors)
        raise RuntimeError(f"Solidity compilation failed:\n{msg}")

    result: dict[str, dict] = {}
    for _src, contracts in sorted(output.get("contracts", {}).items()):
        for name, c in contracts.items():
            evm = c.get("evm", {})
            result[name] = {
                "abi": c.get("abi", []),
                "bytecode": "0x" + evm.get("bytecode", {}).get("object", ""),
                "deployedBytecode": "0x" + evm.get("deployedBytecode", {}).get("object", ""),
            }

    if use_cache:
        CACHE_DIR.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=CACHE_DIR, prefix=".tmp-", suffix=".json")
        with os.fdopen(fd, "w") as f:
            json.dump(result, f)
        os.replace(tmp, cache_file)
    return result


def compile_files(
    paths: Iterable[Path | str],
    *,
    optimizer_runs: int = 200,
    evm_version: str | None = None,
    use_cache: bool = True,
) -> dict[str, dict]:
    """Compile Solidity files; source names are the file names, imports resolve beside them."""
    paths = [Path(p).resolve() for p in paths]
    if not paths:
        raise ValueError("no Solidity files given")
    sources: dict[str, str] = {}
    for p in paths:
        if not p.is_file():
            raise RuntimeError(f"Solidity source not found: {p}")
        sources[p.name] = p.read_text()
    # plain imports ("Name.sol") are read here, beside the importer or in contracts/, so the
    # imported text is part of the sources and of the cache key
    todo = [(p.parent, sources[p.name]) for p in paths]
    while todo:
        here, text = todo.pop()
        for name in _IMPORT.findall(text):
            if name in sources:
                continue
            found = next((d / name for d in (here, REPO_ROOT / "contracts") if (d / name).is_file()), None)
            if found is None:
                raise RuntimeError(f"Solidity import not found: {name} (looked in {here} and contracts/)")
            sources[name] = found.read_text()
            todo.append((found.parent, sources[name]))
    dirs = sorted({p.parent for p in paths})
    return compile_sources(
        sources,
        optimizer_runs=optimizer_runs,
        evm_version=evm_version,
        include_paths=dirs,
        use_cache=use_cache,
    )
