"""The key ring: DLMS key sets, 14908/OSGP keys and CN/IP secrets, loaded from TOML, the
command line (`--key name=value`) or the `LONSCOPE_KEYS` environment variable, and editable
at runtime (TUI).

Keys are secrets.  Every key value is a `Secret` (a bytes subclass whose repr/str are
masked), key sets have masked reprs, and no error message ever contains a value: only the
set's name and the field's name.  A set is shown to users by its `name` only.
"""
from __future__ import annotations

import os
import stat
import sys
import tomllib
from dataclasses import dataclass, field, fields as dc_fields
from typing import Any, Iterable


class KeyRingError(ValueError):
    """A key ring that cannot be used (bad file, bad field); the message names the set and
    the field, never the value."""


class Secret(bytes):
    """Key bytes that do not print themselves."""
    __slots__ = ()

    def __repr__(self) -> str:
        return f"<secret {len(self)} bytes>"

    __str__ = __repr__

    def __format__(self, spec: str) -> str:
        return repr(self)


def _secret(value: Any, where: str, fld: str, text: bool = False) -> Secret:
    if isinstance(value, (bytes, bytearray)):
        return Secret(bytes(value))
    if not isinstance(value, str):
        raise KeyRingError(f"{where}: field {fld} must be a string")
    if text:
        return Secret(value.encode("utf-8"))
    h = value.replace(" ", "").replace(":", "").replace("-", "")
    if h.lower().startswith("0x"):
        h = h[2:]
    try:
        return Secret(bytes.fromhex(h))
    except ValueError:
        raise KeyRingError(f"{where}: field {fld} is not valid hex") from None


def _plain(value: Any, where: str, fld: str) -> bytes:
    """Non-secret hex (system titles, Neuron IDs, domain IDs)."""
    if isinstance(value, (bytes, bytearray)):
        return bytes(value)
    if not isinstance(value, str):
        raise KeyRingError(f"{where}: field {fld} must be a string")
    h = value.replace(" ", "").replace(":", "").replace("-", "")
    try:
        return bytes.fromhex(h)
    except ValueError:
        # a system title may be given as 8 ASCII characters ("ABCDEFGH")
        if fld == "system_title" and len(value) == 8:
            return value.encode("ascii", "replace")
        raise KeyRingError(f"{where}: field {fld} is not valid hex") from None


_DLMS_SECRETS = ("ek", "ak", "bk", "kek", "hls_secret", "lls_password", "dedicated_key")
_DLMS_PATHS = ("certificate", "private_key", "peer_certificate", "client_certificate",
               "server_certificate", "client_private_key", "server_private_key")
_LON_SECRETS = ("oma_key", "psk", "auth_key", "domain_key", "domain0_key", "domain1_key")


def _masked_repr(obj, secret_names, plain_names) -> str:
    parts = [f"name={obj.name!r}"]
    for n in plain_names:
        v = getattr(obj, n, None)
        if v:
            parts.append(f"{n}={v.hex() if isinstance(v, bytes) else v!r}")
    have = [n for n in secret_names if getattr(obj, n, None)]
    if have:
        parts.append("secrets=" + ",".join(have))
    return f"{type(obj).__name__}({', '.join(parts)})"


@dataclass(eq=False)
class DlmsKeySet:
    name: str
    system_title: bytes | None = None      # the server's title this set belongs to; None = default
    ek: Secret | None = None               # global unicast encryption key
    ak: Secret | None = None               # authentication key
    bk: Secret | None = None               # global broadcast encryption key
    kek: Secret | None = None              # master key (key wrap)
    hls_secret: Secret | None = None
    lls_password: Secret | None = None
    dedicated_key: Secret | None = None    # if the user knows it (normally learned from InitiateRequest)
    suite: int | None = None
    certificate: str | None = None         # PEM paths (suites 1/2)
    private_key: str | None = None
    peer_certificate: str | None = None
    client_certificate: str | None = None
    server_certificate: str | None = None
    client_private_key: str | None = None
    server_private_key: str | None = None
    _pem_cache: dict = field(default_factory=dict, repr=False)

    def __repr__(self) -> str:
        return _masked_repr(self, _DLMS_SECRETS, ("system_title", "suite"))

    __str__ = __repr__

    def secrets(self) -> list[bytes]:
        return [bytes(v) for n in _DLMS_SECRETS if (v := getattr(self, n))]

    # -- suites 1/2 material (loaded lazily, errors name the path, never content)
    def _load_pem(self, path: str | None, private: bool):
        if not path:
            return None
        key = (path, private)
        if key in self._pem_cache:
            return self._pem_cache[key]
        from cryptography import x509
        from cryptography.hazmat.primitives import serialization
        try:
            data = open(path, "rb").read()
        except OSError as e:
            raise KeyRingError(f"key set {self.name!r}: cannot read {path}: {e.strerror}") from None
        try:
            if private:
                obj = serialization.load_pem_private_key(data, password=None)
            elif b"CERTIFICATE" in data:
                obj = x509.load_pem_x509_certificate(data).public_key()
            else:
                obj = serialization.load_pem_public_key(data)
        except (ValueError, TypeError):
            raise KeyRingError(f"key set {self.name!r}: {path} is not a usable PEM file") from None
        self._pem_cache[key] = obj
        return obj

    def private_keys(self) -> list:
        out = []
        for p in (self.private_key, self.client_private_key, self.server_private_key):
            try:
                k = self._load_pem(p, True)
            except KeyRingError:
                k = None
            if k is not None:
                out.append(k)
        return out

    def public_keys(self) -> list:
        out = []
        for p in (self.certificate, self.peer_certificate, self.client_certificate, self.server_certificate):
            try:
                k = self._load_pem(p, False)
            except KeyRingError:
                k = None
            if k is not None:
                out.append(k)
        for k in self.private_keys():
            out.append(k.public_key())
        return out


@dataclass(eq=False)
class LonKeySet:
    name: str
    neuron_id: bytes | None = None
    address: tuple[int, int] | None = None    # (subnet, node)
    domain: bytes | None = None
    oma_key: Secret | None = None             # 12-byte OMA key (OSGP legacy digest + RC4)
    psk: Secret | None = None                 # OSGP-AES-128-PSK material
    auth_key: Secret | None = None            # 14908 classic 6-byte domain authentication key
    domain_key: Secret | None = None
    domain0_key: Secret | None = None         # 14908 OMA: domain-0 key || domain-1 key = 12 bytes
    domain1_key: Secret | None = None

    def __repr__(self) -> str:
        return _masked_repr(self, _LON_SECRETS, ("neuron_id", "address", "domain"))

    __str__ = __repr__

    def secrets(self) -> list[bytes]:
        return [bytes(v) for n in _LON_SECRETS if (v := getattr(self, n))]

    def oma_auth_key(self) -> bytes | None:
        """The 12-byte 14908 OMA authentication key (domain-0 key || domain-1 key)."""
        if self.domain0_key and self.domain1_key:
            return bytes(self.domain0_key) + bytes(self.domain1_key)
        if self.oma_key and len(self.oma_key) == 12:
            return bytes(self.oma_key)
        return None

    def matches(self, neuron_id: bytes | None = None, subnet: int | None = None,
                node: int | None = None, domain: bytes | None = None) -> bool:
        if self.domain is not None and domain is not None and bytes(domain) != self.domain:
            return False
        if self.neuron_id is not None and neuron_id is not None:
            return bytes(neuron_id) == self.neuron_id
        if self.address is not None:
            if subnet is None or node is None:
                return False
            return self.address == (subnet, node)
        return self.neuron_id is None   # no address match field: domain-wide / default


class KeyRing:
    """All keys of a session.  `dlms_sets` / `lon_sets` are lists of key sets;
    `cnip_secrets` is a list of CN/IP MD5 secrets (bytes)."""

    def __init__(self):
        self.dlms_sets: list[DlmsKeySet] = []
        self.lon_sets: list[LonKeySet] = []
        self.cnip_secrets: list[Secret] = []
        self.sources: list[str] = []       # where keys came from (paths / "command line")
        self.version = 0                   # bumped on every change (the TUI re-dissects)

    def __repr__(self) -> str:
        return (f"KeyRing(dlms={[s.name for s in self.dlms_sets]}, lon={[s.name for s in self.lon_sets]}, "
                f"cnip_secrets={len(self.cnip_secrets)})")

    __str__ = __repr__

    def __bool__(self) -> bool:
        return True

    # ---- matching
    def match_dlms(self, system_title: bytes | None) -> list[DlmsKeySet]:
        """Candidate sets for a server title: exact matches first, then default sets."""
        exact = [s for s in self.dlms_sets if s.system_title is not None and system_title is not None
                 and s.system_title == bytes(system_title)]
        default = [s for s in self.dlms_sets if s.system_title is None]
        return exact + default

    def candidates(self, *titles: bytes | None) -> list[DlmsKeySet]:
        """Candidate sets for any of several titles (server first), each once (memoised
        until the ring changes)."""
        ck = (self.version, len(self.dlms_sets), titles)
        cache = self.__dict__.setdefault("_cand", {})
        hit = cache.get(ck)
        if hit is not None:
            return hit
        if len(cache) > 1024:
            cache.clear()
        out = cache[ck] = self._candidates(titles)
        return out

    def _candidates(self, titles) -> list[DlmsKeySet]:
        out: list[DlmsKeySet] = []
        for t in titles:
            if t is None:
                continue
            for s in self.dlms_sets:
                if s.system_title is not None and s.system_title == bytes(t) and s not in out:
                    out.append(s)
        for s in self.dlms_sets:
            if s.system_title is None and s not in out:
                out.append(s)
        return out

    def match_lon(self, neuron_id: bytes | None = None, subnet: int | None = None,
                  node: int | None = None, domain: bytes | None = None) -> list[LonKeySet]:
        return [s for s in self.lon_sets if s.matches(neuron_id, subnet, node, domain)]

    def names(self) -> list[str]:
        return [s.name for s in self.dlms_sets] + [s.name for s in self.lon_sets]

    def all_secrets(self) -> list[bytes]:
        """Every secret value (for leak tests)."""
        out = [b for s in self.dlms_sets for b in s.secrets()]
        out += [b for s in self.lon_sets for b in s.secrets()]
        out += [bytes(b) for b in self.cnip_secrets]
        return out

    # ---- editing (TUI)
    def _unique_name(self, base: str) -> str:
        names = set(self.names())
        if base not in names:
            return base
        i = 2
        while f"{base}-{i}" in names:
            i += 1
        return f"{base}-{i}"

    def add_dlms(self, name: str | None = None, **values) -> DlmsKeySet:
        ks = _build_dlms(dict(values, name=name) if name else values,
                         self._unique_name(name or f"dlms-{len(self.dlms_sets) + 1}"), "added key set")
        self.dlms_sets.append(ks)
        self.version += 1
        return ks

    def add_lon(self, name: str | None = None, **values) -> LonKeySet:
        ks = _build_lon(values, self._unique_name(name or f"lon-{len(self.lon_sets) + 1}"), "added key set")
        self.lon_sets.append(ks)
        self.version += 1
        return ks

    def add_cnip_secret(self, secret: bytes | str) -> None:
        self.cnip_secrets.append(_secret(secret, "cnip", "secret"))
        self.version += 1

    def remove(self, name: str) -> bool:
        n0 = len(self.dlms_sets) + len(self.lon_sets)
        self.dlms_sets = [s for s in self.dlms_sets if s.name != name]
        self.lon_sets = [s for s in self.lon_sets if s.name != name]
        changed = n0 != len(self.dlms_sets) + len(self.lon_sets)
        if changed:
            self.version += 1
        return changed

    def merge(self, other: "KeyRing") -> None:
        for s in other.dlms_sets:
            s.name = self._unique_name(s.name)
            self.dlms_sets.append(s)
        for s in other.lon_sets:
            s.name = self._unique_name(s.name)
            self.lon_sets.append(s)
        self.cnip_secrets.extend(other.cnip_secrets)
        self.sources.extend(other.sources)
        self.version += 1


# --------------------------------------------------------------------------- building

def _build_dlms(tbl: dict, name: str, where: str) -> DlmsKeySet:
    where = f"{where} [[dlms]] {name!r}"
    ks = DlmsKeySet(name=name)
    for k, v in tbl.items():
        if k == "name":
            continue
        if k == "system_title":
            ks.system_title = _plain(v, where, k) if v else None
            if ks.system_title is not None and len(ks.system_title) != 8:
                raise KeyRingError(f"{where}: system_title must be 8 bytes")
        elif k == "suite":
            if not isinstance(v, int) or v not in (0, 1, 2):
                raise KeyRingError(f"{where}: suite must be 0, 1 or 2")
            ks.suite = v
        elif k.endswith("_text") and k[:-5] in _DLMS_SECRETS:
            setattr(ks, k[:-5], _secret(v, where, k, text=True))
        elif k in _DLMS_SECRETS:
            setattr(ks, k, _secret(v, where, k))
        elif k in _DLMS_PATHS:
            if not isinstance(v, str):
                raise KeyRingError(f"{where}: {k} must be a path")
            setattr(ks, k, v)
        else:
            raise KeyRingError(f"{where}: unknown field {k!r}")
    for k in ("ek", "ak", "bk", "kek", "dedicated_key"):
        v = getattr(ks, k)
        if v is not None and len(v) not in (16, 24, 32):
            raise KeyRingError(f"{where}: {k} must be 16 or 32 bytes, got {len(v)}")
    return ks


def _parse_address(v: Any, where: str) -> tuple[int, int]:
    if isinstance(v, str) and "/" in v:
        a, b = v.split("/", 1)
        try:
            return int(a, 0), int(b, 0)
        except ValueError:
            pass
    if isinstance(v, (list, tuple)) and len(v) == 2:
        return int(v[0]), int(v[1])
    raise KeyRingError(f"{where}: address must be \"subnet/node\"")


def _build_lon(tbl: dict, name: str, where: str) -> LonKeySet:
    where = f"{where} [[lon]] {name!r}"
    ks = LonKeySet(name=name)
    for k, v in tbl.items():
        if k == "name":
            continue
        if k in ("neuron_id", "domain"):
            setattr(ks, k, _plain(v, where, k))
        elif k == "address":
            ks.address = _parse_address(v, where)
        elif k.endswith("_text") and k[:-5] in _LON_SECRETS:
            setattr(ks, k[:-5], _secret(v, where, k, text=True))
        elif k in _LON_SECRETS:
            setattr(ks, k, _secret(v, where, k))
        else:
            raise KeyRingError(f"{where}: unknown field {k!r}")
    if ks.oma_key is not None and len(ks.oma_key) not in (12, 16):
        raise KeyRingError(f"{where}: oma_key must be 12 (or 16) bytes")
    return ks


_warned: set[str] = set()


def _check_permissions(path: str) -> None:
    try:
        mode = os.stat(path).st_mode
    except OSError:
        return
    if mode & (stat.S_IRWXG | stat.S_IRWXO) and path not in _warned:
        _warned.add(path)
        print(f"lonscope: warning: key ring {path} is readable by group/others "
              f"(chmod 600 {path})", file=sys.stderr)


def _load_file(path: str, ring: KeyRing) -> None:
    try:
        with open(path, "rb") as f:
            data = tomllib.load(f)
    except FileNotFoundError:
        raise KeyRingError(f"key ring {path}: no such file") from None
    except OSError as e:
        raise KeyRingError(f"key ring {path}: {e.strerror}") from None
    except tomllib.TOMLDecodeError as e:
        # the decoder's message quotes a position, not content
        raise KeyRingError(f"key ring {path}: not valid TOML ({str(e).split('(')[-1].rstrip(')')})") from None
    where = f"key ring {os.path.basename(path)}"
    public = data.get("public_test_keys", False)
    if not isinstance(public, bool):
        raise KeyRingError(f"{where}: public_test_keys must be true or false")
    if not public:   # published test keys (demo, Green Book) need no protection
        _check_permissions(path)
    for i, tbl in enumerate(data.get("dlms", []) or []):
        if not isinstance(tbl, dict):
            raise KeyRingError(f"{where}: [[dlms]] entries must be tables")
        nm = ring._unique_name(str(tbl.get("name") or f"dlms-{len(ring.dlms_sets) + 1}"))
        ring.dlms_sets.append(_build_dlms(tbl, nm, where))
    for tbl in data.get("lon", []) or []:
        if not isinstance(tbl, dict):
            raise KeyRingError(f"{where}: [[lon]] entries must be tables")
        nm = ring._unique_name(str(tbl.get("name") or f"lon-{len(ring.lon_sets) + 1}"))
        ring.lon_sets.append(_build_lon(tbl, nm, where))
    for tbl in data.get("cnip", []) or []:
        if not isinstance(tbl, dict):
            raise KeyRingError(f"{where}: [[cnip]] entries must be tables")
        if "secret" in tbl:
            ring.cnip_secrets.append(_secret(tbl["secret"], where, "cnip secret"))
        elif "secret_text" in tbl:
            ring.cnip_secrets.append(_secret(tbl["secret_text"], where, "cnip secret_text", text=True))
    unknown = set(data) - {"dlms", "lon", "cnip", "public_test_keys"}
    if unknown:
        raise KeyRingError(f"{where}: unknown section(s) {', '.join(sorted(unknown))}")
    ring.sources.append(path)


def parse_key_args(extra: Iterable[str], ring: KeyRing) -> None:
    """`--key ek=HEX --key ak=HEX --key system_title=HEX ...` make one DLMS set named
    "command line"; `lon.oma_key=..`, `lon.address=1/5` one LON set; `cnip.secret=..` a
    CN/IP secret.  A `name=` item names the set."""
    dl: dict[str, str] = {}
    lo: dict[str, str] = {}
    for item in extra or ():
        if "=" not in item:
            raise KeyRingError("--key expects NAME=VALUE (e.g. ek=000102...)")
        k, v = item.split("=", 1)
        k = k.strip().lower()
        if k.startswith("dlms."):
            k = k[5:]
        if k.startswith("lon."):
            lo[k[4:]] = v.strip()
        elif k in ("cnip.secret", "cnip_secret"):
            ring.cnip_secrets.append(_secret(v.strip(), "--key", "cnip.secret"))
        elif k in ("cnip.secret_text",):
            ring.cnip_secrets.append(_secret(v, "--key", "cnip.secret_text", text=True))
        else:
            dl[k] = v if k.endswith("_text") else v.strip()
    if dl:
        nm = ring._unique_name(dl.pop("name", None) or "command line")
        if "suite" in dl:
            try:
                dl["suite"] = int(dl["suite"])
            except ValueError:
                raise KeyRingError("--key suite must be 0, 1 or 2") from None
        ring.dlms_sets.insert(0, _build_dlms(dl, nm, "--key"))
    if lo:
        nm = ring._unique_name(lo.pop("name", None) or "command line lon")
        ring.lon_sets.insert(0, _build_lon(lo, nm, "--key"))
    if dl or lo:
        ring.sources.append("command line")


def load_keys(path: str | os.PathLike | None = None, extra: Iterable[str] = ()) -> KeyRing:
    """Load a key ring from `path` (or the file named by LONSCOPE_KEYS when path is None)
    plus `--key` items.  Raises KeyRingError with a one-line, value-free message."""
    ring = KeyRing()
    if path is None:
        env = os.environ.get("LONSCOPE_KEYS")
        if env:
            path = env
    if path is not None:
        _load_file(os.fspath(path), ring)
    parse_key_args(extra, ring)
    return ring


def ensure_keyring(keys: Any) -> KeyRing | None:
    """Accept a KeyRing, a path, or None."""
    if keys is None or isinstance(keys, KeyRing):
        return keys
    if hasattr(keys, "dlms_sets"):
        return keys
    return load_keys(keys)


__all__ = ["KeyRing", "KeyRingError", "Secret", "DlmsKeySet", "LonKeySet", "load_keys",
           "parse_key_args", "ensure_keyring"]
