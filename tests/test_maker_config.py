"""Maker adapter configuration mistakes: one clear `error:` line naming the key, exit 2."""

from __future__ import annotations

import pytest

from .conftest import DEVNET_CONFIG


def ext(chain) -> dict:
    return chain.dep.extras["maker"]


def _write_bad(tmp_path, chain, ilks_line: str) -> str:
    """config/devnet.toml's chain/keeper/swap sections and one maker protocol with `ilks_line`."""
    text = DEVNET_CONFIG.read_text()
    e = ext(chain)
    p = tmp_path / "maker.toml"
    p.write_text(text[:text.index("[[protocols]]")] + f"""
[[protocols]]
kind = "maker"
name = "maker"
dog = "{e['dog']}"
{ilks_line}
""")
    return str(p)


@pytest.mark.parametrize("ilks_line, message", [
    ('ilks = [{ name = "ETH-A", clipper = "WBTC_CLIP" }]',
     "protocols[0].ilks[0].clipper: WBTC_CLIP is the Clipper of 'WBTC-A', not 'ETH-A'"),
    ('ilks = [{ name = "ETH-A", clipper = "DAI_TOKEN" }]',
     "protocols[0].ilks[0].clipper: DAI_TOKEN is not a Clipper"),
    ('ilks = [{ name = "DOGE-A", clipper = "ETH_CLIP" }]',
     "protocols[0].ilks[0].name: ilk 'DOGE-A' does not exist in the Vat"),
])
def test_bad_clipper_or_ilk_is_one_clear_error_line(chain, tmp_path, monkeypatch, capsys, ilks_line, message):
    from keeper.cli import main

    e = ext(chain)
    subst = {"WBTC_CLIP": e["ilks"]["WBTC-A"]["clipper"], "ETH_CLIP": e["ilks"]["ETH-A"]["clipper"], "DAI_TOKEN": e["dai"]}
    for k, v in subst.items():
        ilks_line, message = ilks_line.replace(k, v), message.replace(k, v)
    path = _write_bad(tmp_path, chain, ilks_line)
    for k in [k for k in __import__("os").environ if k.startswith("KEEPER_")]:
        monkeypatch.delenv(k)
    monkeypatch.setenv("KEEPER_RPC_URL", chain.url)
    code = main(["scan", "--config", path, "--json"])
    out, err = capsys.readouterr()
    lines = [line for line in err.splitlines() if line.strip()]
    assert code == 2, err
    assert lines[-1].startswith("error: ") and message in lines[-1], lines
    assert sum(line.startswith("error:") for line in lines) == 1 and "Traceback" not in err


def test_maker_section_keys_are_validated(tmp_path, capsys):
    from keeper.cli import main

    text = DEVNET_CONFIG.read_text().replace('min_margin_pct = 2.0', 'min_margin_pct = -1')
    p = tmp_path / "k.toml"
    p.write_text(text)
    assert main(["scan", "--config", str(p)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: protocols[") and "min_margin_pct: must be ≥ 0" in err
    p.write_text(DEVNET_CONFIG.read_text().replace('min_margin_pct = 2.0', 'routes = ["loan"]'))
    assert main(["scan", "--config", str(p)]) == 2
    assert ".routes: must be a non-empty list" in capsys.readouterr().err
