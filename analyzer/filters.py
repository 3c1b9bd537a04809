"""Display filters: a Wireshark-compatible subset, parsed with lark and compiled once into
plain Python closures over the flat field dict (`{name: [values...]}`).

Supported::

    lon.srcnet                          presence
    lon.srcnet == 5   (eq ne lt le gt ge, == != === !== < <= > >=)
    lon.code & 0x60                     bitwise and (true when non-zero)
    lon.code & 0x60 == 0x20
    dlms.obis == 1.0.1.8.0.255          OBIS literal (also 1-0:1.8.0*255)
    lon.domain == aa:bb:cc              byte strings (aa:bb:cc, aa-bb-cc, aabbcc)
    frame contains "x"   f matches "re"  f ~ "re"
    lon.srcnode in {1 2 5..9}           set membership, ranges, also `not in`
    a and b, a && b, a or b, a || b, not a, !a, ( ... )
    lon.tpdu_type == "ACKD"             an integer field compared with its value label

Semantics (as Wireshark >= 3.6): a field with several occurrences matches `==`, `<`, ...
if any occurrence matches; `!=` is "all occurrences differ" (the negation of `==`);
`===` is "all equal", `!==` is "any differs".  A comparison with an absent field is false.
`matches` uses Python `re`, case-insensitive by default (as Wireshark); `(?-i)` turns
that off.
"""
from __future__ import annotations

import ipaddress
import re
from typing import Any, Callable

from lark import Lark, Token, Tree
from lark.exceptions import UnexpectedCharacters, UnexpectedEOF, UnexpectedInput, UnexpectedToken

from dissectors import load_all
from dissectors.core import FT_BOOL, FT_BYTES, FT_FLOAT, FT_INT, FT_NONE, FT_OBIS, FT_STR, \
    FT_TIME, FT_UINT, REGISTRY, field as _register

# Fields every packet can have (set by the pipeline / the output layer, not by a dissector).
VIRTUAL_FIELDS = {
    "frame.number": (FT_UINT, "Frame number"),
    "frame.time_epoch": (FT_FLOAT, "Capture time (seconds since the epoch)"),
    "frame.time_relative": (FT_FLOAT, "Time since the first displayed packet (s)"),
    "frame.len": (FT_UINT, "Frame length on the wire"),
    "frame.cap_len": (FT_UINT, "Captured length"),
    "frame.protocols": (FT_STR, "Protocols in frame (a:b:c)"),
    "_ws.col.Source": (FT_STR, "Source column"),
    "_ws.col.Destination": (FT_STR, "Destination column"),
    "_ws.col.Protocol": (FT_STR, "Protocol column"),
    "_ws.col.Info": (FT_STR, "Info column"),
    "_ws.col.Length": (FT_UINT, "Length column"),
    "_ws.expert": (FT_STR, "Expert info message"),
    "_ws.malformed": (FT_BOOL, "Malformed packet"),
    "lonscope.status": (FT_STR, "Decryption status of the packet"),
}
for _n, (_t, _desc) in VIRTUAL_FIELDS.items():
    if _n not in REGISTRY:
        _register(_n, _t, _desc)


class FilterError(ValueError):
    """A filter that does not parse or names an unknown field.  `column` is 1-based."""

    def __init__(self, message: str, column: int | None = None):
        super().__init__(message)
        self.message = message
        self.column = column

    def __str__(self) -> str:
        if self.column is not None:
            return f"filter error at column {self.column}: {self.message}"
        return f"filter error: {self.message}"


_GRAMMAR = r"""
?start: or_expr
?or_expr: and_expr (OR and_expr)*
?and_expr: not_expr (AND not_expr)*
?not_expr: NOT not_expr -> not_
         | atom
?atom: "(" or_expr ")"
     | test
test: operand [relation]
operand: WORD [BITAND value]
relation: CMP value                 -> cmp
        | CONTAINS value            -> contains
        | MATCHES value             -> matches
        | IN "{" setitem+ "}"       -> in_
        | NOT IN "{" setitem+ "}"   -> notin
setitem: value [RANGE value] [","]
?value: WORD | STRING

CMP: "===" | "!==" | "==" | "!=" | "<=" | ">=" | "<" | ">" | "eq" | "ne" | "lt" | "le" | "gt" | "ge" | "any_eq" | "all_ne" | "all_eq" | "any_ne"
CONTAINS: "contains"
MATCHES: "matches" | "~"
IN: "in"
AND: "and" | "&&"
OR: "or" | "||"
NOT: "not" | "!"
BITAND: "&"
RANGE: ".."
STRING: /r?"(?:[^"\\]|\\.)*"/
WORD: /(?!(?:and|or|not|in|eq|ne|lt|le|gt|ge|contains|matches|any_eq|all_ne|all_eq|any_ne)\b)-?[A-Za-z0-9_][A-Za-z0-9_:\-]*(\.(?!\.)[A-Za-z0-9_:\-*]*)*(\*[0-9]+)?/
%ignore /[ \t\r\n]+/
"""

class _LazyParser:
    """The LALR parser, built on first use (keeps `lonscope` start-up fast when no filter
    is given); lark caches the tables on disk between runs."""
    _p = None

    def _get(self):
        if self._p is None:
            try:
                _LazyParser._p = Lark(_GRAMMAR, parser="lalr", propagate_positions=True,
                                      maybe_placeholders=True, cache=True)
            except OSError:     # no writable temp dir for the cache
                _LazyParser._p = Lark(_GRAMMAR, parser="lalr", propagate_positions=True,
                                      maybe_placeholders=True)
        return self._p

    def parse(self, text):
        return self._get().parse(text)

    def lex(self, text):
        return self._get().lex(text)


_parser = _LazyParser()

_CMP_NAMES = {"eq": "==", "ne": "!=", "lt": "<", "le": "<=", "gt": ">", "ge": ">=",
              "any_eq": "==", "all_ne": "!=", "all_eq": "===", "any_ne": "!=="}

_TERM_DESC = {"WORD": "a field name or value", "STRING": "a string", "CMP": "a comparison",
              "LPAR": "'('", "RPAR": "')'", "AND": "'and'", "OR": "'or'", "NOT": "'not'",
              "RBRACE": "'}'", "LBRACE": "'{'", "$END": "end of filter", "BITAND": "'&'",
              "CONTAINS": "'contains'", "MATCHES": "'matches'", "IN": "'in'", "RANGE": "'..'",
              "COMMA": "','"}


# Names registered by the dissectors alone (before any stage module was imported), or
# None when stages were imported first and the two cannot be told apart.
DISSECTOR_FIELDS: frozenset | None = None
_snapshot_done = False


def _load_fields() -> None:
    """Every registered field: dissectors and the pipeline stages (which add their own)."""
    global DISSECTOR_FIELDS, _snapshot_done
    load_all()
    try:
        import sys
        from .pipeline import STAGE_MODULES, _load_stage_modules
        if not _snapshot_done:
            _snapshot_done = True
            if not any(m in sys.modules for m in STAGE_MODULES):
                DISSECTOR_FIELDS = frozenset(REGISTRY)
        _load_stage_modules()
    except Exception:       # a broken stage module must not break filtering
        pass


def _known_field(name: str) -> bool:
    if name in REGISTRY:
        return True
    # protocol names (a layer's name is also a field, Wireshark-like), and fields built
    # from tables (e.g. "cnip") registered only as dissector table entries
    from dissectors.core import TABLES
    for t in TABLES.values():
        for proto, _fn in t.entries.values():
            if proto == name:
                return True
        for proto, _fn in t.heuristics:
            if proto == name:
                return True
    return False


# --------------------------------------------------------------------------- literals

_HEXBYTES = re.compile(r"^[0-9A-Fa-f]{2}([:\-.][0-9A-Fa-f]{2})*$")
_HEXPLAIN = re.compile(r"^([0-9A-Fa-f]{2})+$")
_OBIS_DOTTED = re.compile(r"^(\d{1,3})\.(\d{1,3})\.(\d{1,3})\.(\d{1,3})\.(\d{1,3})\.(\d{1,3})$")
_OBIS_STD = re.compile(r"^(\d{1,3})-(\d{1,3}):(\d{1,3})\.(\d{1,3})\.(\d{1,3})(?:[*.](\d{1,3}))?$")


def _unquote(s: str) -> str:
    if s.startswith("r\""):
        return s[2:-1]
    body = s[1:-1]
    if "\\" not in body:
        return body
    out = []
    i = 0
    while i < len(body):
        c = body[i]
        if c == "\\" and i + 1 < len(body):
            n = body[i + 1]
            if n == "x" and i + 3 < len(body) + 1:
                try:
                    out.append(chr(int(body[i + 2:i + 4], 16)))
                    i += 4
                    continue
                except ValueError:
                    pass
            out.append({"n": "\n", "t": "\t", "r": "\r", "0": "\0"}.get(n, n))
            i += 2
            continue
        out.append(c)
        i += 1
    return "".join(out)


def _parse_int(s: str) -> int | None:
    t = s.lower()
    neg = t.startswith("-")
    if neg:
        t = t[1:]
    try:
        if t.startswith(("0x", "0b", "0o")):
            v = int(t, 0)
        elif len(t) > 1 and t.startswith("0") and t.isdigit():
            v = int(t, 8)        # C-style octal, as Wireshark
        else:
            v = int(t, 10)
    except ValueError:
        return None
    return -v if neg else v


def _parse_bytes(s: str) -> bytes | None:
    if _HEXBYTES.match(s):
        return bytes.fromhex(re.sub(r"[:\-.]", "", s))
    if _HEXPLAIN.match(s):
        return bytes.fromhex(s)
    try:
        return ipaddress.ip_address(s).packed
    except ValueError:
        return None


def _parse_obis(s: str) -> str | None:
    m = _OBIS_DOTTED.match(s)
    if m:
        parts = m.groups()
    else:
        m = _OBIS_STD.match(s)
        if not m:
            return None
        parts = tuple(p if p is not None else "255" for p in m.groups())
    if any(int(p) > 255 for p in parts):
        return None
    return ".".join(str(int(p)) for p in parts)


def _literal(ftype: str, fname: str, raw: str, quoted: bool) -> list:
    """Convert a literal to the candidate values it stands for when compared with `fname`
    (a list: an integer field may accept both the number and a label)."""
    text = _unquote(raw) if quoted else raw
    f = REGISTRY.get(fname)
    if ftype in (FT_UINT, FT_INT):
        out = []
        v = None if quoted else _parse_int(text)
        if v is not None:
            out.append(v)
        if not quoted and text.lower() in ("true", "false"):
            out.append(1 if text.lower() == "true" else 0)
        if f is not None and f.labels:
            low = text.lower()
            for k, lab in f.labels.items():
                if isinstance(lab, str) and lab.lower() == low:
                    out.append(k)
        if not out:
            # a label that is the value itself (some int-typed fields carry names)
            if quoted:
                return [text]
            raise ValueError(f"'{text}' is not a valid integer for {fname}")
        return out
    if ftype == FT_BOOL:
        t = text.lower()
        if t in ("1", "true", "yes"):
            return [True]
        if t in ("0", "false", "no"):
            return [False]
        raise ValueError(f"'{text}' is not a valid boolean for {fname}")
    if ftype in (FT_FLOAT, FT_TIME):
        try:
            return [float(text) if not text.lower().startswith(("0x", "-0x")) else float(int(text, 0))]
        except ValueError:
            raise ValueError(f"'{text}' is not a valid number for {fname}") from None
    if ftype == FT_BYTES:
        if quoted:
            return [text.encode("utf-8", "surrogateescape")]
        b = _parse_bytes(text)
        if b is None:
            if len(text) == 1 or (len(text) % 2 == 1 and re.fullmatch(r"[0-9A-Fa-f]+", text)):
                try:
                    return [bytes.fromhex("0" + text)]
                except ValueError:
                    pass
            raise ValueError(f"'{text}' is not a valid byte string for {fname}")
        return [b]
    if ftype == FT_OBIS:
        o = _parse_obis(text)
        if o is None:
            raise ValueError(f"'{text}' is not a valid OBIS code for {fname} (a.b.c.d.e.f)")
        return [o]
    if ftype == FT_NONE:
        raise ValueError(f"{fname} has no value; test its presence only")
    # strings and anything else
    if not quoted:
        o = _parse_obis(text)
        if o is not None:
            return [text, o] if o != text else [o]
    return [text]


# --------------------------------------------------------------------------- compiler

Pred = Callable[[dict], bool]


# Fields that the fast pass leaves out because they only repeat others (Wireshark's
# "either" fields): a filter or a -T fields column asking for them gets the parts.
ALIASES: dict[str, tuple[str, ...]] = {
    "ip.addr": ("ip.src", "ip.dst"),
    "ipv6.addr": ("ipv6.src", "ipv6.dst"),
    "eth.addr": ("eth.src", "eth.dst"),
    "tcp.port": ("tcp.srcport", "tcp.dstport"),
    "udp.port": ("udp.srcport", "udp.dstport"),
}


def alias_values(fields: dict, name: str) -> list | None:
    """The values of `name`, or of its parts when the packet has only those."""
    vals = fields.get(name)
    if vals is not None:
        return vals
    parts = ALIASES.get(name)
    if parts is None:
        return None
    out = []
    for p in parts:
        v = fields.get(p)
        if v:
            out.extend(v)
    return out or None


def _vals_getter(name: str, mask: int | None) -> Callable[[dict], list | None]:
    if name in ALIASES:
        if mask is None:
            return lambda fields: alias_values(fields, name)

        def masked_alias(fields):
            vals = alias_values(fields, name)
            if not vals:
                return None
            return [v & mask for v in vals if isinstance(v, int)]
        return masked_alias
    if mask is None:
        return lambda fields: fields.get(name)

    def masked(fields):
        vals = fields.get(name)
        if not vals:
            return None
        out = []
        for v in vals:
            try:
                out.append(v & mask)
            except TypeError:
                pass
        return out
    return masked


class _Compiler:
    def __init__(self, text: str):
        self.text = text
        self.used: set[str] = set()

    def err(self, msg: str, node) -> FilterError:
        col = getattr(node, "column", None)
        if col is None and hasattr(node, "meta") and not node.meta.empty:
            col = node.meta.column
        return FilterError(msg, col)

    def compile(self, t) -> Pred:
        if isinstance(t, Token):
            raise self.err(f"unexpected '{t}'", t)
        kind = t.data
        if kind == "or_expr":
            parts = [self.compile(c) for c in t.children if not isinstance(c, Token)]
            if len(parts) == 2:
                a, b = parts
                return lambda f: a(f) or b(f)
            return lambda f: any(p(f) for p in parts)
        if kind == "and_expr":
            parts = [self.compile(c) for c in t.children if not isinstance(c, Token)]
            if len(parts) == 2:
                a, b = parts
                return lambda f: a(f) and b(f)
            return lambda f: all(p(f) for p in parts)
        if kind == "not_":
            inner = self.compile(t.children[-1])
            return lambda f: not inner(f)
        if kind == "test":
            return self.test(t)
        raise self.err(f"unexpected {kind}", t)

    def fieldname(self, tok: Token) -> str:
        name = str(tok)
        if not _known_field(name):
            raise FilterError(f"'{name}' is not a valid field or protocol name", tok.column)
        self.used.add(name)
        return name

    def ftype(self, name: str) -> str:
        f = REGISTRY.get(name)
        return f.type if f is not None else FT_NONE

    def values(self, name: str, ftype: str, tok: Token, masked: bool) -> list:
        quoted = tok.type == "STRING"
        if masked and ftype not in (FT_UINT, FT_INT):
            raise FilterError(f"'&' needs an integer field, {name} is {ftype}", tok.column)
        try:
            return _literal(ftype, name, str(tok), quoted)
        except ValueError as e:
            raise FilterError(str(e), tok.column) from None

    def rhs_field(self, tok: Token) -> str | None:
        if tok.type == "WORD" and str(tok) in REGISTRY and _parse_int(str(tok)) is None:
            self.used.add(str(tok))
            return str(tok)
        return None

    def test(self, t: Tree) -> Pred:
        operand, relation = t.children
        name_tok, _amp, mask_tok = operand.children
        if name_tok.type != "WORD":
            raise FilterError("expected a field name", name_tok.column)
        name = self.fieldname(name_tok)
        ftype = self.ftype(name)
        mask = None
        if mask_tok is not None:
            if ftype not in (FT_UINT, FT_INT):
                raise FilterError(f"'&' needs an integer field, {name} is {ftype}", name_tok.column)
            m = _parse_int(str(mask_tok)) if mask_tok.type == "WORD" else None
            if m is None:
                raise FilterError(f"'{mask_tok}' is not an integer mask", mask_tok.column)
            mask = m
        get = _vals_getter(name, mask)
        if relation is None:
            if mask is None:
                if name in ALIASES:
                    return lambda f: bool(get(f))
                return lambda f: name in f
            return lambda f: any(get(f) or ())
        kind = relation.data
        if kind == "cmp":
            op_tok, val_tok = relation.children
            op = _CMP_NAMES.get(str(op_tok), str(op_tok))
            other = self.rhs_field(val_tok)
            if other is not None:
                return self.field_cmp(get, other, op)
            lits = self.values(name, ftype, val_tok, mask is not None)
            return self.cmp(name, get, op, lits, mask is not None, ftype, val_tok)
        if kind == "contains":
            val_tok = relation.children[1]
            if ftype in (FT_BYTES,):
                lits = self.values(name, ftype, val_tok, False)
            elif ftype in (FT_STR, FT_OBIS) or val_tok.type == "STRING":
                lits = [_unquote(str(val_tok)) if val_tok.type == "STRING" else str(val_tok)]
            else:
                raise FilterError(f"'contains' needs a string or bytes field, {name} is {ftype}",
                                  relation.children[0].column)
            lit = lits[0]
            lit_s = lit.decode("latin-1") if isinstance(lit, bytes) else lit
            lit_b = lit if isinstance(lit, bytes) else lit.encode("utf-8", "surrogateescape")

            def contains(f):
                vals = get(f)
                if not vals:
                    return False
                for v in vals:
                    if isinstance(v, str):
                        if lit_s in v:
                            return True
                    elif isinstance(v, (bytes, bytearray)):
                        if lit_b in v:
                            return True
                return False
            return contains
        if kind == "matches":
            val_tok = relation.children[1]
            pat = _unquote(str(val_tok)) if val_tok.type == "STRING" else str(val_tok)
            flags = re.IGNORECASE | re.DOTALL
            if pat.startswith("(?-i)"):
                pat = pat[5:]
                flags = re.DOTALL
            try:
                rx = re.compile(pat, flags)
            except re.error as e:
                raise FilterError(f"bad regular expression: {e}", val_tok.column) from None
            search = rx.search

            def matches(f):
                vals = get(f)
                if not vals:
                    return False
                for v in vals:
                    if isinstance(v, (bytes, bytearray)):
                        v = bytes(v).decode("latin-1")
                    elif not isinstance(v, str):
                        v = str(v)
                    if search(v):
                        return True
                return False
            return matches
        if kind in ("in_", "notin"):
            items = [c for c in relation.children if isinstance(c, Tree)]
            singles: list = []
            ranges: list[tuple] = []
            for it in items:
                lo_tok, _r, hi_tok = it.children[:3]
                if hi_tok is None and lo_tok.type == "WORD" and ".." in str(lo_tok):
                    a, _, b = str(lo_tok).partition("..")
                    lo_tok = Token("WORD", a, line=lo_tok.line, column=lo_tok.column)
                    hi_tok = Token("WORD", b, line=lo_tok.line, column=lo_tok.column)
                if hi_tok is None:
                    singles.extend(self.values(name, ftype, lo_tok, mask is not None))
                else:
                    lo = self.values(name, ftype, lo_tok, mask is not None)[0]
                    hi = self.values(name, ftype, hi_tok, mask is not None)[0]
                    ranges.append((lo, hi))
            single_set = None
            try:
                single_set = frozenset(singles)
            except TypeError:
                pass

            def member(f):
                vals = get(f)
                if not vals:
                    return False
                for v in vals:
                    try:
                        if (v in single_set) if single_set is not None else (v in singles):
                            return True
                    except TypeError:
                        pass
                    for lo, hi in ranges:
                        try:
                            if lo <= v <= hi:
                                return True
                        except TypeError:
                            pass
                return False
            if kind == "notin":
                return lambda f: bool(get(f)) and not member(f)
            return member
        raise self.err(f"unexpected {kind}", t)

    def cmp(self, name, get, op, lits, masked, ftype, tok) -> Pred:
        if op in ("==", "!=", "===", "!=="):
            direct = not masked and name not in ALIASES
            if len(lits) == 1:
                lit = lits[0]
                if direct:
                    def any_eq(f):
                        vals = f.get(name)
                        return vals is not None and lit in vals
                else:
                    def any_eq(f):
                        vals = get(f)
                        return bool(vals) and lit in vals
            else:
                def any_eq(f):
                    vals = get(f)
                    if not vals:
                        return False
                    for a in lits:
                        if a in vals:
                            return True
                    return False
            if op == "==":
                return any_eq
            if op == "!=":
                return lambda f: bool(get(f)) and not any_eq(f)

            def all_eq(f):
                vals = get(f)
                if not vals:
                    return False
                return all(v in lits for v in vals)
            if op == "===":
                return all_eq
            return lambda f: bool(get(f)) and not all_eq(f)
        if ftype in (FT_BYTES, FT_STR, FT_OBIS, FT_BOOL, FT_NONE) and ftype != FT_BYTES or isinstance(lits[0], str):
            if ftype == FT_OBIS or ftype == FT_BOOL:
                raise FilterError(f"'{op}' cannot order {ftype} values of {name}", tok.column)
        lit = lits[0]
        import operator
        fn = {"<": operator.lt, "<=": operator.le, ">": operator.gt, ">=": operator.ge}[op]

        def order(f):
            vals = get(f)
            if not vals:
                return False
            for v in vals:
                try:
                    if fn(v, lit):
                        return True
                except TypeError:
                    pass
            return False
        return order

    def field_cmp(self, get, other: str, op: str) -> Pred:
        import operator
        fn = {"==": operator.eq, "!=": operator.ne, "<": operator.lt, "<=": operator.le,
              ">": operator.gt, ">=": operator.ge, "===": operator.eq, "!==": operator.ne}[op]

        def pair(f):
            a = get(f)
            b = f.get(other)
            if not a or not b:
                return False
            if op == "!=":
                return not any(x == y for x in a for y in b)
            if op == "===":
                return all(x == y for x in a for y in b)
            for x in a:
                for y in b:
                    try:
                        if fn(x, y):
                            return True
                    except TypeError:
                        pass
            return False
        return pair


# --------------------------------------------------------------------------- errors

def _describe(tok: Token | None) -> str:
    if tok is None:
        return ""
    return str(tok)


def _syntax_error(text: str, e: UnexpectedInput) -> FilterError:
    col = getattr(e, "column", None)
    if isinstance(e, UnexpectedCharacters):
        ch = text[e.pos_in_stream] if e.pos_in_stream < len(text) else ""
        return FilterError(f"unexpected character '{ch}'", col)
    expected = set(getattr(e, "expected", ()) or ())
    tok = getattr(e, "token", None)
    at_end = isinstance(e, UnexpectedEOF) or (tok is not None and tok.type == "$END")
    if at_end:
        col = len(text) + 1
    prev = None
    pos = e.pos_in_stream if not at_end and getattr(e, "pos_in_stream", None) is not None else len(text)
    try:
        for t in _parser.lex(text[:pos]):
            prev = t
    except Exception:
        pass
    if expected & {"WORD", "STRING"} and prev is not None and prev.type in ("CMP", "CONTAINS", "MATCHES", "BITAND", "RANGE"):
        return FilterError(f"expected a value after '{prev}'", col)
    if expected & {"WORD"} and prev is not None and prev.type in ("AND", "OR", "NOT", "LPAR"):
        return FilterError(f"expected a field name after '{prev}'", col)
    if "RPAR" in expected and at_end:
        return FilterError("missing ')'", col)
    if "RBRACE" in expected and at_end:
        return FilterError("missing '}'", col)
    if at_end:
        if prev is None:
            return FilterError("empty filter", col)
        return FilterError(f"unexpected end of filter after '{prev}'", col)
    what = f"'{tok}'" if tok is not None else "input"
    if prev is not None and prev.type == "WORD" and tok is not None and tok.type in ("WORD", "STRING"):
        return FilterError(f"unexpected {what} after '{prev}' (missing operator?)", col)
    names = sorted({_TERM_DESC.get(x, x) for x in expected if not x.startswith("__")})
    hint = f"; expected {', '.join(names[:4])}" if names and len(names) <= 4 else ""
    return FilterError(f"unexpected {what}{hint}", col)


# --------------------------------------------------------------------------- API

def compile_filter(text: str) -> Callable[[dict], bool]:
    """Parse and compile a display filter; raises `FilterError` (with `.column`)."""
    _load_fields()
    if text is None or not text.strip():
        return _MatchAll(text or "")
    try:
        tree = _parser.parse(text)
    except UnexpectedInput as e:
        raise _syntax_error(text, e) from None
    c = _Compiler(text)
    fn = c.compile(tree)
    fn.text = text            # type: ignore[attr-defined]
    fn.fields = frozenset(c.used)   # type: ignore[attr-defined]
    return fn


class _MatchAll:
    fields = frozenset()

    def __init__(self, text: str = ""):
        self.text = text

    def __call__(self, fields: dict) -> bool:
        return True


def validate(text: str) -> FilterError | None:
    """None if the filter is valid, else the FilterError (for the TUI's filter bar)."""
    try:
        compile_filter(text)
    except FilterError as e:
        return e
    return None


def complete(prefix: str) -> list[str]:
    """Field names starting with `prefix` (or with the last word of a partial filter)."""
    _load_fields()
    m = re.search(r"[A-Za-z0-9_.\-]*$", prefix or "")
    word = m.group(0) if m else ""
    names = set(REGISTRY)
    from dissectors.core import TABLES
    for t in TABLES.values():
        for proto, _fn in t.entries.values():
            names.add(proto)
    return sorted(n for n in names if n.startswith(word))


__all__ = ["FilterError", "compile_filter", "validate", "complete", "VIRTUAL_FIELDS"]
