"""Copies of an APDU are not attacks: an AARQ/AARE pair resent by the 14908 transport (the
transaction tracking names the original in `lon.retransmission`) opens no "second"
association with the same challenge or dedicated key, while a new transaction that reuses
them does."""
from __future__ import annotations

import json

from analyzer import dlmscrypto as dc

from _dlms_frames import aare, aarq
from test_audit import AK, CT, EK, LC, LM, SV, _lon_dlms, findings, rule


def test_retransmitted_aarq_is_not_a_challenge_relay_or_shared_key():
    """An AARQ retransmitted by the 14908 transport after its AARE (same TID and bytes) opens
    no second association with "the same" challenge or dedicated key; a new AARQ that
    reuses the challenge and the dedicated key in a new transaction does."""
    dk = bytes(range(32, 48))
    init = bytes.fromhex("010110") + dk + bytes.fromhex("0000065F1F0400007E1F04B0")
    body = dc.protect(0x30, 1, CT, EK, AK, init)
    q = aarq(CT, mechanism=5, auth_value=b"K56iVagY", context=3, user_info=b"\x21" + bytes([len(body)]) + body)
    r = aare(SV, mechanism=5, stoc=b"P6wRJ21F", context=3)
    frames = [_lon_dlms(q, LC, LM, 1), _lon_dlms(r, LM, LC, 1, 2), _lon_dlms(q, LC, LM, 1), _lon_dlms(r, LM, LC, 1, 2)]
    fs = findings(frames)
    assert not {"hls-challenge-relay", "dedicated-key-shared", "replayed-apdu", "mitm-client-relay",
                "ic-backwards"} & {f["rule"] for f in fs}, fs
    fs = findings(frames + [_lon_dlms(q, LC, LM, 2), _lon_dlms(r, LM, LC, 2, 2)])
    assert rule(fs, "hls-challenge-relay") and rule(fs, "dedicated-key-shared")
    (f,) = rule(fs, "dedicated-key-shared")
    assert f["frames"] == [1, 5] and dk.hex() not in json.dumps(fs)
