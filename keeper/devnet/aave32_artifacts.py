"""Compiled aave-v3-origin v3.2.0 bytecode, read as DATA from the PyPI wheel web3-ethereum-defi 1.2.

The wheel ships Foundry JSON artifacts (abi, bytecode.object with linkReferences,
deployedBytecode, metadata; solc 0.8.20) under eth_defi/abi/aave_v3/. Only those JSON files
are read, straight from the zip: the package's Python code is never imported and the wheel is
never installed (it would pull web3.py 7 into the keeper's environment).

Which Aave: the metadata's source hashes (keccak256 of Pool.sol, LiquidationLogic.sol,
GenericLogic.sol and instances/PoolInstance.sol) equal those of the aave-dao/aave-v3-origin
tag v3.2.0 (commit 7c6023e, 2024-10-01) byte for byte; POOL_REVISION() is 5; the Pool has
getEModeCategoryCollateralBitmap and getLiquidationGracePeriod and no getReserveDeficit
(3.3). v3.2.1 changed Pool.sol and PoolInstance.sol, so this is 3.2.0 exactly.

The wheel is fetched once by `./dev setup` (pip download --no-deps) into .devnet/wheels/; if
it is missing, wheel_path() downloads it the same way, and fails with a clear message when
that is not possible. Its sha256 is checked.
"""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
import zipfile
from functools import cache
from pathlib import Path

from .artifacts import REPO_ROOT

PACKAGE = "web3-ethereum-defi"
VERSION = "1.2"
WHEEL_NAME = "web3_ethereum_defi-1.2-py3-none-any.whl"
WHEEL_SHA256 = "906579bfdb25d9aaa906543ce55a9d62e21a545e196e0230cb467c8b4406869d"
WHEEL_DIR = REPO_ROOT / ".devnet" / "wheels"
PREFIX = "eth_defi/abi/aave_v3/"
AAVE_ORIGIN_TAG = "v3.2.0"  # aave-dao/aave-v3-origin, identified by the metadata's source hashes


def wheel_path(download: bool = True) -> Path:
    """The wheel's path; downloaded with pip (no dependencies, not installed) if missing."""
    path = WHEEL_DIR / WHEEL_NAME
    if not path.is_file() and download:
        WHEEL_DIR.mkdir(parents=True, exist_ok=True)
        cmd = [sys.executable, "-m", "pip", "download", "-q", "--disable-pip-version-check", "--no-deps",
               f"{PACKAGE}=={VERSION}", "-d", str(WHEEL_DIR)]
        r = subprocess.run(cmd, capture_output=True, text=True)
        if r.returncode != 0 or not path.is_file():
            raise RuntimeError(
                f"the Aave v3.2 devnet market needs {WHEEL_NAME} (its compiled aave-v3-origin artifacts) in "
                f"{WHEEL_DIR}; `{' '.join(cmd[2:])}` failed: {(r.stderr or r.stdout).strip()[-400:]}. "
                f"Run ./dev setup where PyPI is reachable, or put the wheel there by hand.")
    if not path.is_file():
        raise RuntimeError(f"{path} is missing: run ./dev setup")
    return path


@cache
def _zip() -> zipfile.ZipFile:
    path = wheel_path()
    h = hashlib.sha256(path.read_bytes()).hexdigest()
    if h != WHEEL_SHA256:
        raise RuntimeError(f"{path}: sha256 {h}, expected {WHEEL_SHA256} ({PACKAGE} {VERSION}); delete it and run ./dev setup")
    return zipfile.ZipFile(path)


@cache
def artifact(name: str) -> dict:
    """The Foundry JSON of eth_defi/abi/aave_v3/<name>.json."""
    try:
        return json.loads(_zip().read(f"{PREFIX}{name}.json"))
    except KeyError:
        raise KeyError(f"{WHEEL_NAME} has no {PREFIX}{name}.json") from None


def link_references(name: str) -> dict[str, list[dict]]:
    """library name -> [{start, length}] (byte offsets into the creation code)."""
    out: dict[str, list[dict]] = {}
    for _src, libs in artifact(name)["bytecode"].get("linkReferences", {}).items():
        for lib, refs in libs.items():
            out.setdefault(lib, []).extend(refs)
    return out


def link(name: str, libraries: dict[str, str]) -> str:
    """Creation bytecode of `name` (0x-hex) with its library placeholders replaced by the
    addresses in `libraries` (library name -> address)."""
    code = artifact(name)["bytecode"]["object"].removeprefix("0x")
    chars = list(code)
    for lib, refs in link_references(name).items():
        if lib not in libraries:
            raise RuntimeError(f"{name} needs library {lib} linked (have {sorted(libraries)})")
        addr = libraries[lib].lower().removeprefix("0x")
        for ref in refs:
            start = ref["start"] * 2
            chars[start:start + ref["length"] * 2] = addr
    linked = "".join(chars)
    if "__" in linked:
        raise RuntimeError(f"{name} bytecode still has an unlinked placeholder after linking")
    if not linked:
        raise RuntimeError(f"{name} has no creation bytecode (an interface or abstract contract)")
    return "0x" + linked


def source_hashes(name: str) -> dict[str, str]:
    """Source path -> keccak256 from the artifact's metadata (what identifies the release)."""
    md = artifact(name)["metadata"]
    if isinstance(md, str):
        md = json.loads(md)
    return {path: v["keccak256"] for path, v in md["sources"].items()}
