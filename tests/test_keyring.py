"""Key ring loading, matching, editing and secrecy."""
from __future__ import annotations

import os
from pathlib import Path

import pytest

from analyzer.keyring import KeyRingError, Secret, load_keys

ROOT = Path(__file__).resolve().parent.parent
EKH = "000102030405060708090A0B0C0D0E0F"
AKH = "D0D1D2D3D4D5D6D7D8D9DADBDCDDDEDF"

RING = f'''
[[dlms]]
name = "meter-a"
system_title = "4142434445464748"
ek = "{EKH}"
ak = "{AKH}"
kek = "{EKH}"
hls_secret_text = "Gurux"
lls_password = "3132333435363738"

[[dlms]]
name = "fallback"
ek = "62626262626262626262626262626262"
ak = "62626262626262626262626262626262"

[[lon]]
name = "plc"
address = "1/17"
domain = "0A"
oma_key = "DFDFDFDFDFDFDFDFDFDFDFDF"

[[lon]]
neuron_id = "01020304AABB"
psk = "00112233445566778899AABBCCDDEEFF"

[[cnip]]
secret = "A1A2A3A4A5A6A7A8A9AAABACADAEAFB0"
'''


def _write(tmp_path, text, mode=0o600):
    p = tmp_path / "ring.toml"
    p.write_text(text)
    os.chmod(p, mode)
    return p


def test_load_and_match(tmp_path, capsys):
    ring = load_keys(_write(tmp_path, RING))
    assert [s.name for s in ring.dlms_sets] == ["meter-a", "fallback"]
    a = ring.dlms_sets[0]
    assert a.ek == bytes.fromhex(EKH) and a.hls_secret == b"Gurux" and a.lls_password == b"12345678"
    assert [s.name for s in ring.match_dlms(b"ABCDEFGH")] == ["meter-a", "fallback"]
    assert [s.name for s in ring.match_dlms(b"XXXXXXXX")] == ["fallback"]
    assert [s.name for s in ring.candidates(b"ZZZZZZZZ", b"ABCDEFGH")] == ["meter-a", "fallback"]
    assert [s.name for s in ring.match_lon(subnet=1, node=17, domain=b"\x0a")] == ["plc"]
    assert ring.match_lon(subnet=1, node=17, domain=b"\x0b") == []
    assert [s.name for s in ring.match_lon(neuron_id=bytes.fromhex("01020304AABB"))] == ["lon-2"]
    assert ring.lon_sets[0].oma_auth_key() == b"\xdf" * 12
    assert ring.cnip_secrets == [bytes.fromhex("A1A2A3A4A5A6A7A8A9AAABACADAEAFB0")]
    assert capsys.readouterr().err == ""      # 0600: no warning


def test_permissions_warning_once(tmp_path, capsys):
    p = _write(tmp_path, RING, 0o644)
    load_keys(p)
    load_keys(p)
    err = capsys.readouterr().err
    assert err.count("readable by group/others") == 1


def test_masked_reprs(tmp_path):
    ring = load_keys(_write(tmp_path, RING))
    text = repr(ring) + str(ring) + "".join(repr(s) + str(s) for s in ring.dlms_sets + ring.lon_sets)
    text += repr(ring.cnip_secrets) + f"{ring.dlms_sets[0].ek}" + str(ring.dlms_sets[0].ek)
    for secret in ring.all_secrets():
        assert secret.hex() not in text.lower()
        assert secret.hex().upper() not in text
    assert "meter-a" in repr(ring) and "secrets=ek,ak,kek,hls_secret,lls_password" in repr(ring.dlms_sets[0])
    assert repr(Secret(b"\x01" * 16)) == "<secret 16 bytes>"


@pytest.mark.parametrize("text,msg", [
    ('[[dlms]]\nname="x"\nek="00zz"\n', "field ek is not valid hex"),
    ('[[dlms]]\nname="x"\nek="0011"\n', "ek must be 16 or 32 bytes"),
    ('[[dlms]]\nname="x"\nbogus="0011"\n', "unknown field 'bogus'"),
    ('[[dlms]\n', "not valid TOML"),
    ('[[lon]]\naddress="x"\n', "address must be"),
])
def test_errors_name_field_not_value(tmp_path, text, msg):
    with pytest.raises(KeyRingError) as ei:
        load_keys(_write(tmp_path, text))
    assert msg in str(ei.value)
    assert "0011" not in str(ei.value) and "00zz" not in str(ei.value)


def test_missing_file(tmp_path):
    with pytest.raises(KeyRingError, match="no such file"):
        load_keys(tmp_path / "nope.toml")


def test_command_line_and_env(tmp_path, monkeypatch):
    p = _write(tmp_path, RING)
    monkeypatch.setenv("LONSCOPE_KEYS", str(p))
    ring = load_keys(None, extra=[f"ek={EKH}", f"ak={AKH}", "system_title=4D4D4D0000BC614E",
                                 "lon.oma_key=" + "01" * 12, "lon.address=2/3", "cnip.secret=" + "ff" * 16])
    assert ring.dlms_sets[0].name == "command line"
    assert ring.dlms_sets[0].system_title == bytes.fromhex("4D4D4D0000BC614E")
    assert [s.name for s in ring.dlms_sets][1:] == ["meter-a", "fallback"]
    assert ring.lon_sets[0].address == (2, 3)
    assert ring.cnip_secrets[-1] == b"\xff" * 16
    with pytest.raises(KeyRingError):
        load_keys(None, extra=["ek"])
    monkeypatch.delenv("LONSCOPE_KEYS")
    assert load_keys(None).dlms_sets == []


def test_runtime_edit():
    ring = load_keys(None)
    v0 = ring.version
    ks = ring.add_dlms("tui", ek=EKH, ak=AKH, system_title="4142434445464748")
    assert ks.name == "tui" and ring.version > v0
    ks2 = ring.add_dlms("tui", ek=EKH)
    assert ks2.name == "tui-2"
    ring.add_lon("n", oma_key="02" * 12)
    assert ring.remove("tui") and not ring.remove("tui")
    assert ring.names() == ["tui-2", "n"]
    ring.add_cnip_secret("00" * 16)
    assert len(ring.cnip_secrets) == 1


def test_shipped_gurux_ring_loads():
    ring = load_keys(ROOT / "keys" / "gurux-captures.toml")
    assert [s.name for s in ring.dlms_sets] == ["greenbook", "gurux-simple-key"]
    assert all(s.system_title == b"ABCDEFGH" for s in ring.dlms_sets)


def test_open_capture_accepts_path():
    import analyzer
    cap = analyzer.open_capture([], keys=ROOT / "keys" / "gurux-captures.toml")
    assert cap.keys.dlms_sets[0].name == "greenbook"


def test_public_test_keys_need_no_private_file(tmp_path, capsys):
    p = _write(tmp_path, "public_test_keys = true\n" + RING, 0o644)
    ring = load_keys(p)
    assert ring.dlms_sets                       # the sets still load
    assert capsys.readouterr().err == ""        # published test keys: no permission warning
    bad = _write(tmp_path, 'public_test_keys = "yes"\n' + RING, 0o600)
    with pytest.raises(KeyRingError, match="public_test_keys"):
        load_keys(bad)
