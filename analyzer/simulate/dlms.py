"""DLMS/COSEM application associations between a client (data concentrator, head-end,
attacker) and a meter, in every security configuration, with the ground truth of each APDU.

An `Association` produces request/response pairs of *wire* APDUs (protected as the
security profile says) and hands them to a transport callable; the truth records the
plaintext, the protection, the key-set name and the decoded operations.
"""
from __future__ import annotations

import hashlib
import struct
from dataclasses import dataclass
from typing import Callable

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec

from analyzer import dlmscrypto as dc

from . import apdu as A

CURRENT_ASSOCIATION = "0.0.40.0.0.255"


@dataclass(frozen=True)
class SecProfile:
    name: str
    context: str            # "ln" | "sn" | "ln-cipher"
    mechanism: int          # 0 none, 1 LLS, 3 HLS-MD5, 5 HLS-GMAC, 7 HLS-ECDSA
    protection: str | None  # None | "glo" | "ded" | "general-glo" | "general-ded" | "signing"
    sc: int = 0             # security control byte for protected APDUs
    gbt: bool = False       # large reads with general-block-transfer instead of get-with-datablock


PROFILES = {p.name: p for p in [
    SecProfile("none", "ln", 0, None),
    SecProfile("lls", "ln", 1, None),
    SecProfile("hls-md5", "ln", 3, None),
    SecProfile("hls-gmac", "ln-cipher", 5, "glo", 0x30),
    SecProfile("hls-ecdsa", "ln-cipher", 7, "glo", 0x31),
    SecProfile("auth-only", "ln-cipher", 5, "glo", 0x10),
    SecProfile("enc-only", "ln-cipher", 0, "glo", 0x20),
    SecProfile("ae-global", "ln-cipher", 1, "glo", 0x30),
    SecProfile("ae-dedicated", "ln-cipher", 5, "ded", 0x30),
    SecProfile("general-glo", "ln-cipher", 5, "general-glo", 0x30),
    SecProfile("general-ded", "ln-cipher", 5, "general-ded", 0x30, gbt=True),
    SecProfile("general-signing", "ln-cipher", 7, "signing", 0x31),
    SecProfile("sn-c1219", "sn", 1, None),
]}


@dataclass
class Keys:
    """Secret material of one key set (lives only in the simulator and the key-ring file)."""
    name: str
    ek: bytes
    ak: bytes
    lls_password: bytes = b"00000000"
    hls_secret: bytes = b"secret!!"
    client_key: object = None       # ec private keys (suite 1)
    server_key: object = None


def det_ec_key(seed_text: str):
    """A P-256 private key derived from a label (demo material, reproducible)."""
    n = int.from_bytes(hashlib.sha256(seed_text.encode()).digest(), "big")
    order = 0xFFFFFFFF00000000FFFFFFFFFFFFFFFFBCE6FAADA7179E84F3B9CAC2FC632551
    return ec.derive_private_key(n % (order - 1) + 1, ec.SECP256R1())


def ecdsa_sign_det(key, data: bytes) -> bytes:
    """Deterministic (RFC 6979) ECDSA so that captures are reproducible bit for bit."""
    der = key.sign(data, ec.ECDSA(hashes.SHA256(), deterministic_signing=True))
    return dc.der_to_raw(der, 32)


class Endpoint:
    """One side's DLMS state that persists across associations (invocation counter)."""

    def __init__(self, title: bytes, ic: int = 1):
        self.title = title
        self.ic = ic

    def next_ic(self) -> int:
        v = self.ic
        self.ic += 1
        return v


Transport = Callable[[bytes, bytes, dict, dict], None]


class Association:
    """One association: AARQ/AARE, HLS passes 3/4, services, release."""

    def __init__(self, name: str, sim, client, server, profile: SecProfile, keys: Keys | None,
                 client_ep: Endpoint, server_ep: Endpoint, transport: Transport,
                 keyset_name: str | None, meter_model: "MeterModel"):
        self.name = name
        self.sim = sim
        self.rng = sim.rng
        self.client, self.server = client, server
        self.p = profile
        self.k = keys
        self.cep, self.sep = client_ep, server_ep
        self.send = transport
        self.keyset = keyset_name
        self.model = meter_model
        self.iid = 0
        self.dedicated: bytes | None = None
        self.stoc = self.ctos = b""
        self.mitm = None             # attack hook: fn(req, req_truth, resp, resp_truth) -> same 4
        self.forced_stoc: bytes | None = None   # a server that hands out a given challenge

    # ------------------------------------------------------------ helpers
    def _base(self, direction: str) -> dict:
        return {"layers": ["lon", "adp", "dlms"],
                "dlms": {"association": self.name, "client": self.client.addr, "server": self.server.addr,
                         "direction": direction, "profile": self.p.name, "keyset": self.keyset}}

    def _next_iid(self) -> int:
        self.iid = (self.iid + 1) % 16
        return self.iid

    def protect(self, plain: bytes, direction: str, force_ic: int | None = None,
                glo_only: bool = False) -> tuple[bytes, dict | None]:
        """Apply the profile's protection to a plaintext APDU; returns (wire, protection)."""
        kind = self.p.protection
        if kind is None or self.k is None:
            return plain, None
        ep = self.cep if direction == "request" else self.sep
        ic = ep.next_ic() if force_ic is None else force_ic
        title = ep.title
        sc = self.p.sc
        if glo_only and kind in ("general-glo", "general-ded", "signing"):
            # HLS passes travel as service-specific APDUs: glo-, or ded- once a dedicated
            # key is agreed
            kind = "ded" if kind == "general-ded" else "glo"
        if kind == "signing":
            tid = struct.pack(">Q", ic)
            orig, recip = (self.cep.title, self.sep.title) if direction == "request" else (self.sep.title, self.cep.title)
            key = self.k.client_key if direction == "request" else self.k.server_key
            signed = A.general_signing_signed_part(tid, orig, recip, plain)
            sig = ecdsa_sign_det(key, signed[1:])
            wire = A.general_signing(tid, orig, recip, plain, sig)
            return wire, {"kind": "general-signing", "sc": None, "ic": None, "system_title": orig.hex(),
                          "signature": "ok", "tag": "0xdf"}
        dedicated = kind in ("ded", "general-ded")
        ek = self.dedicated if dedicated else self.k.ek
        body = dc.protect(sc, ic, title, ek, self.k.ak, plain)
        if kind in ("glo", "ded"):
            wire = A.wrap_service(plain, body, dedicated)
        else:
            wire = A.wrap_general(title, body, dedicated)
        return wire, {"kind": kind, "sc": sc, "ic": ic, "system_title": title.hex(),
                      "tag": f"0x{wire[0]:02x}"}

    def _truth(self, direction: str, plain: bytes, wire: bytes, prot: dict | None, ops: list[dict],
               status: str | None = None) -> dict:
        t = self._base(direction)
        d = t["dlms"]
        d["apdu"] = A.APDU_NAMES.get(wire[0], f"0x{wire[0]:02x}")
        d["plain_apdu"] = A.APDU_NAMES.get(plain[0], f"0x{plain[0]:02x}")
        d["plaintext"] = plain.hex()
        d["wire"] = wire.hex()
        d["protection"] = prot
        if prot is None:
            d["decryption"] = None
        elif status is not None:
            d["decryption"] = status
        elif prot["kind"] == "general-signing":
            d["decryption"] = "auth-ok"          # the signature verifies with the ring's key pair
        elif prot["sc"] & 0x30 == 0x30:
            d["decryption"] = "decrypted"
        elif prot["sc"] & 0x10:
            d["decryption"] = "auth-ok"
        else:
            d["decryption"] = "unauthenticated"
        d["ops"] = ops
        return t

    def exchange(self, req_plain: bytes, resp_plain: bytes, req_ops: list, resp_ops: list,
                 glo_only: bool = False, req_force_ic: int | None = None,
                 resp_force_ic: int | None = None) -> tuple[bytes, bytes]:
        """One confirmed service: protect both APDUs as the profile says, record the truth,
        let an attack hook rewrite them, and hand them to the transport."""
        rw, rp = self.protect(req_plain, "request", req_force_ic, glo_only)
        sw, sp = self.protect(resp_plain, "response", resp_force_ic, glo_only)
        rt = self._truth("request", req_plain, rw, rp, req_ops)
        st = self._truth("response", resp_plain, sw, sp, resp_ops)
        if self.mitm:
            rw, rt, sw, st = self.mitm(rw, rt, sw, st)
        self.send(rw, sw, rt, st)
        return rw, sw

    # ------------------------------------------------------------ association
    def associate(self, hls: bool = True) -> bool:
        """AARQ/AARE, then (for HLS, unless `hls` is False) passes 3 and 4."""
        req, rt = self.aarq_apdu()
        resp, st = self.aare_apdu()
        if self.mitm:
            req, rt, resp, st = self.mitm(req, rt, resp, st)
        self.send(req, resp, rt, st)
        if self.p.mechanism >= 2 and hls:
            self.hls_passes()
        return True

    def aarq_apdu(self, ctos: bytes | None = None) -> tuple[bytes, dict]:
        """The client's AARQ (with its protected InitiateRequest) and its truth."""
        p = self.p
        ctx = A.APP_CONTEXT[p.context]
        conf = A.CONFORMANCE_SN if p.context == "sn" else A.CONFORMANCE_LN
        if p.protection in ("ded", "general-ded"):
            self.dedicated = self.rng.getrandbits(128).to_bytes(16, "big")
        ireq = A.initiate_request(conf, dedicated_key=self.dedicated)
        ui_req, prot_req = ireq, None
        if p.protection and p.protection != "signing":
            ic = self.cep.next_ic()
            ui_req = bytes([0x21]) + A.blen(5 + len(ireq) + (12 if p.sc & 0x10 else 0)) + \
                dc.protect(p.sc, ic, self.cep.title, self.k.ek, self.k.ak, ireq)
            prot_req = {"kind": "glo", "sc": p.sc, "ic": ic, "system_title": self.cep.title.hex(), "tag": "0x21"}
        calling = self.cep.title if (p.protection or p.mechanism >= 5) else None
        auth = None
        if p.mechanism == 1:
            auth = self.k.lls_password
        elif p.mechanism >= 2:
            # printable challenges, as many meters and clients generate them
            self.ctos = ctos if ctos is not None else bytes(0x30 + self.rng.randrange(75) for _ in range(16))
            auth = self.ctos
        req = A.aarq(ctx, ui_req, calling, p.mechanism, auth)
        rt = self._truth("request", req, req, None,
                         [{"service": "aarq", "dir": "request", "mechanism": p.mechanism, "context": ctx}])
        rt["dlms"]["initiate"] = {"protection": prot_req, "plaintext": ireq.hex(),
                                  "decryption": self._status(prot_req)}
        if p.mechanism == 1:
            rt["findings"] = ["lls-cleartext"]
        return req, rt

    def aare_apdu(self) -> tuple[bytes, dict]:
        """The server's AARE (accepted; StoC for HLS) and its truth."""
        p = self.p
        ctx = A.APP_CONTEXT[p.context]
        conf = A.CONFORMANCE_SN if p.context == "sn" else A.CONFORMANCE_LN
        iresp = A.initiate_response(conf & 0x7FFFFF, vaa=0xFA00 if p.context == "sn" else 0x0007)
        ui_resp, prot_resp = iresp, None
        if p.protection and p.protection != "signing":
            ic2 = self.sep.next_ic()
            ui_resp = bytes([0x28]) + A.blen(5 + len(iresp) + (12 if p.sc & 0x10 else 0)) + \
                dc.protect(p.sc, ic2, self.sep.title, self.k.ek, self.k.ak, iresp)
            prot_resp = {"kind": "glo", "sc": p.sc, "ic": ic2, "system_title": self.sep.title.hex(), "tag": "0x28"}
        stoc = None
        if p.mechanism >= 2:
            stoc = bytes(0x30 + self.rng.randrange(75) for _ in range(16))
            if self.forced_stoc is not None:
                stoc = self.forced_stoc
            self.stoc = stoc
        resp = A.aare(ctx, 0, 14 if p.mechanism >= 2 else 0, ui_resp,
                      self.sep.title if (p.protection or p.mechanism >= 5) else None, p.mechanism, stoc)
        st = self._truth("response", resp, resp, None,
                         [{"service": "aare", "dir": "response", "result": 0, "mechanism": p.mechanism}])
        st["dlms"]["initiate"] = {"protection": prot_resp, "plaintext": iresp.hex(),
                                  "decryption": self._status(prot_resp)}
        return resp, st

    def hls_apdus(self, f_stoc: bytes | None = None, f_ctos: bytes | None = None):
        """Pass 3 (action-request) and pass 4 (action-response), plaintext, with their ops."""
        fs = f_stoc if f_stoc is not None else self.f_stoc()
        fc = f_ctos if f_ctos is not None else self.f_ctos()
        iid = self._next_iid() | 0xC0
        req = A.action_request(iid, 15, CURRENT_ASSOCIATION, 1, ("octet-string", fs))
        resp = A.action_response(iid, 0, ("octet-string", fc))
        self.pass3 = fs
        rq = [{"service": "action", "dir": "request", "invoke_id": iid & 0x0F, "class_id": 15,
               "obis": CURRENT_ASSOCIATION, "method_id": 1, "hls": "pass3", "value": fs.hex()}]
        rs = [{"service": "action", "dir": "response", "invoke_id": iid & 0x0F, "result": 0,
               "hls": "pass4", "value": fc.hex()}]
        return req, resp, rq, rs

    @staticmethod
    def _status(prot):
        if prot is None:
            return None
        return "decrypted" if prot["sc"] & 0x30 == 0x30 else ("auth-ok" if prot["sc"] & 0x10 else "unauthenticated")

    def f_stoc(self) -> bytes:
        m = self.p.mechanism
        if m == 3:
            return dc.hls_response(3, self.stoc, secret=self.k.hls_secret)
        if m == 5:
            ic = self.cep.next_ic()
            return dc.hls_response(5, self.stoc, ek=self.k.ek, ak=self.k.ak, own_title=self.cep.title, ic=ic)
        if m == 7:
            return ecdsa_sign_det(self.k.client_key, self.cep.title + self.sep.title + self.stoc + self.ctos)
        raise ValueError(m)

    def f_ctos(self) -> bytes:
        m = self.p.mechanism
        if m == 3:
            return dc.hls_response(3, self.ctos, secret=self.k.hls_secret)
        if m == 5:
            ic = self.sep.next_ic()
            return dc.hls_response(5, self.ctos, ek=self.k.ek, ak=self.k.ak, own_title=self.sep.title, ic=ic)
        if m == 7:
            return ecdsa_sign_det(self.k.server_key, self.sep.title + self.cep.title + self.ctos + self.stoc)
        raise ValueError(m)

    def hls_passes(self, f_stoc: bytes | None = None) -> None:
        req, resp, rq, rs = self.hls_apdus(f_stoc)
        self.exchange(req, resp, rq, rs, glo_only=True)

    def release(self) -> None:
        req, resp = A.rlrq(0), A.rlre(0)
        rt = self._truth("request", req, req, None, [{"service": "rlrq", "dir": "request"}])
        st = self._truth("response", resp, resp, None, [{"service": "rlre", "dir": "response"}])
        self.send(req, resp, rt, st)

    # ------------------------------------------------------------ services
    def get(self, class_id: int, obis: str, attr: int, block_size: int = 96) -> None:
        iid = self._next_iid() | 0xC0
        value = self.model.read(class_id, obis, attr)
        req = A.get_request(iid, class_id, obis, attr)
        rq_ops = [{"service": "get", "dir": "request", "invoke_id": iid & 0x0F, "class_id": class_id,
                   "obis": obis, "attribute_id": attr}]
        full = A.get_response(iid, value)
        rs_op = {"service": "get", "dir": "response", "invoke_id": iid & 0x0F, "result": 0,
                 "value": A.jsonable(value), "type": value[0]}
        if len(full) <= block_size + 8:
            self.exchange(req, full, rq_ops, [rs_op])
            return
        if self.p.gbt:
            self._gbt(req, rq_ops, full, rs_op, block_size)
            return
        raw = full[3:]           # the Get-Data-Result's Data, sent as raw blocks
        raw = raw[1:]            # drop the 00 "data" choice: raw-data holds the encoded Data
        blocks = [raw[i:i + block_size] for i in range(0, len(raw), block_size)]
        for n, chunk in enumerate(blocks, 1):
            last = n == len(blocks)
            resp = A.get_response_block(iid, last, n, chunk)
            op = {"service": "get", "dir": "response", "invoke_id": iid & 0x0F, "block": n, "last": last}
            if last:
                op.update(value=rs_op["value"], type=rs_op["type"], reassembled=True)
            if n == 1:
                self.exchange(req, resp, rq_ops, [op])
            else:
                nreq = A.get_request_next(iid, n - 1)
                self.exchange(nreq, resp, [{"service": "get", "dir": "request", "invoke_id": iid & 0x0F,
                                            "block_ack": n - 1}], [op])

    def _gbt(self, req, rq_ops, full, rs_op, block_size):
        # the whole (protected) get-response travels in general-block-transfer blocks
        rw, rp = self.protect(req, "request")
        sw, sp = self.protect(full, "response")
        chunks = [sw[i:i + block_size] for i in range(0, len(sw), block_size)]
        rt = self._truth("request", req, rw, rp, rq_ops)
        for n, chunk in enumerate(chunks, 1):
            last = n == len(chunks)
            g = A.gbt(last, n, 0 if n == 1 else n - 1, chunk)
            st = self._truth("response", full, g, None, [])
            st["dlms"]["gbt"] = {"block": n, "last": last}
            if last:
                st["dlms"]["reassembled"] = {"apdu": A.APDU_NAMES.get(sw[0]), "protection": sp, "wire": sw.hex(),
                                             "plaintext": full.hex(), "ops": [rs_op],
                                             "decryption": self._truth("response", full, sw, sp, [])["dlms"]["decryption"]}
            self.send(rw, g, rt, st)
            if not last:
                rw = A.gbt(False, n, n, b"")
                rt = self._truth("request", rw, rw, None, [])
                rt["dlms"]["gbt"] = {"block": n, "last": False, "ack": n}

    def set(self, class_id: int, obis: str, attr: int, value: tuple, **kw) -> tuple[bytes, bytes]:
        iid = self._next_iid() | 0xC0
        req = A.set_request(iid, class_id, obis, attr, value)
        resp = A.set_response(iid, 0)
        return self.exchange(req, resp,
                             [{"service": "set", "dir": "request", "invoke_id": iid & 0x0F, "class_id": class_id,
                               "obis": obis, "attribute_id": attr, "value": A.jsonable(value), "type": value[0]}],
                             [{"service": "set", "dir": "response", "invoke_id": iid & 0x0F, "result": 0}], **kw)

    def action(self, class_id: int, obis: str, method: int, param: tuple | None, **kw) -> tuple[bytes, bytes]:
        iid = self._next_iid() | 0xC0
        req = A.action_request(iid, class_id, obis, method, param)
        resp = A.action_response(iid, 0)
        op = {"service": "action", "dir": "request", "invoke_id": iid & 0x0F, "class_id": class_id,
              "obis": obis, "method_id": method}
        if param is not None:
            op.update(value=A.jsonable(param), type=param[0])
        return self.exchange(req, resp, [op],
                             [{"service": "action", "dir": "response", "invoke_id": iid & 0x0F, "result": 0}], **kw)

    def sn_read(self, names: list[int]) -> None:
        values = [self.model.read_sn(n) for n in names]
        req = A.read_request(names)
        resp = A.read_response(values)
        self.exchange(req, resp,
                      [{"service": "read", "dir": "request", "variable_name": n} for n in names],
                      [{"service": "read", "dir": "response", "value": A.jsonable(v), "type": v[0]} for v in values])


# --------------------------------------------------------------------------- meter model

class MeterModel:
    """Values a meter returns, reproducible from the simulation's RNG and clock."""

    def __init__(self, rng, serial: str, t0_ns: int):
        self.rng = rng
        self.serial = serial
        self.energy = rng.randrange(100_000, 9_000_000)
        self.t0 = t0_ns

    def clock(self, t_ns: int) -> bytes:
        import datetime as _dt
        t = _dt.datetime.fromtimestamp(t_ns / 1e9, _dt.timezone.utc) + _dt.timedelta(hours=1)
        return A.datetime_bytes(t.year, t.month, t.day, t.hour, t.minute, t.second,
                                t.isoweekday(), 0, -60, 0x00)

    def read(self, class_id: int, obis: str, attr: int) -> tuple:
        now = getattr(self, "now", self.t0)
        if class_id == 8 and attr == 2:
            return ("octet-string", self.clock(now))
        if class_id == 1 and obis == "0.0.96.1.0.255":
            return ("visible-string", self.serial)
        if class_id == 3 and attr == 3:
            scaler, unit = {"1.0.1.8.0.255": (0, 30), "1.0.32.7.0.255": (-1, 35),
                            "1.0.31.7.0.255": (-2, 33)}.get(obis, (0, 255))
            return ("structure", [("integer", scaler), ("enum", unit)])
        if class_id == 3 and attr == 2:
            if obis == "1.0.1.8.0.255":
                self.energy += self.rng.randrange(0, 400)
                return ("double-long-unsigned", self.energy)
            if obis == "1.0.32.7.0.255":
                return ("long-unsigned", 2250 + self.rng.randrange(120))
            return ("long-unsigned", self.rng.randrange(0, 6000))
        if class_id == 7 and attr == 2:
            rows = []
            e = self.energy - 24 * 250
            for h in range(24):
                e += self.rng.randrange(50, 400)
                rows.append(("structure", [("octet-string", A.datetime_bytes(2025, 12, 31, h, 0, 0, 3, 0, -60, 0)),
                                           ("double-long-unsigned", e),
                                           ("long-unsigned", 2250 + self.rng.randrange(120))]))
            return ("array", rows)
        if class_id == 70 and attr == 2:
            return ("boolean", True)
        return ("null-data", None)

    def read_sn(self, name: int) -> tuple:
        # class 26 utility tables at base 0x1000 + 0x20 per table: attr 4 buffer
        table = (name - 0x1000) // 0x20
        if table == 1:      # BT01 general manufacturer identification
            return ("octet-string", b"LNSC" + b"SIM-MTR1" + bytes([1, 2, 3, 4]) + self.serial.encode()[:16].ljust(16, b" "))
        if table == 23:     # BT23 current register data
            return ("octet-string", struct.pack("<I", self.energy) + struct.pack("<I", self.energy // 3))
        return ("octet-string", bytes(8))
