"""Export the packets currently shown in the TUI (the filtered view)."""
from __future__ import annotations

import os

from .store import STATUS_NAMES
from .widgets import fmt_time


def view_rows(session):
    """The shown packets in capture order (a sorted list exports the same packets, in the
    order of the capture, so that pcapng timestamps and request/response links stay right)."""
    view = session.view
    if view is not None:
        yield from view[:]
    else:
        yield from range(session.store.n)


def view_dataframe(session):
    """One row per shown packet with the packet-list columns (pandas DataFrame)."""
    import pandas as pd
    st = session.store
    t0 = int(st.ts[0]) if st.n else 0
    recs = []
    for row in view_rows(session):
        proto, src, dst, info, status, _flags = session.summary(row)
        recs.append({"number": row + 1, "time": int(st.ts[row]) / 1e9,
                     "time_relative": (int(st.ts[row]) - t0) / 1e9,
                     "time_utc": fmt_time("absolute", int(st.ts[row]), t0, None),
                     "source": src, "destination": dst, "protocol": proto,
                     "length": int(st.origlen[row]), "info": info,
                     "protocols": st.stacks[int(st.stack[row])] if st.decoded(row) else "",
                     "status": STATUS_NAMES.get(status, "")})
    cols = ["number", "time", "time_relative", "time_utc", "source", "destination", "protocol",
            "length", "info", "protocols", "status"]
    return pd.DataFrame(recs, columns=cols)


def export_view(session, path: str) -> int:
    """Write the shown packets to `path`; the format follows the extension (.csv,
    .parquet, .pcapng, .pcap).  Returns the number of packets written."""
    ext = os.path.splitext(path)[1].lower()
    if ext in (".pcapng", ".pcap"):
        from analyzer.pcapwriter import PcapngWriter, PcapWriter
        n = 0
        w = PcapngWriter(path) if ext == ".pcapng" else None
        try:
            for row in view_rows(session):
                rec = session.record(row)
                if w is None:
                    w = PcapWriter(path, linktype=rec.linktype)
                w.write(rec)
                n += 1
        finally:
            if w is None:
                w = PcapngWriter(path) if ext == ".pcapng" else PcapWriter(path, linktype=1)
            w.close()
        return n
    try:
        from analyzer.export import output_format, packet_tables, write_tables
    except ImportError:       # the export module is optional for the TUI
        write_tables = None
    if write_tables is not None and ext in (".csv", ".parquet", ".pq", ".jsonl", ".ndjson"):
        packets = (session.fast_packet(row) for row in view_rows(session))
        return write_tables(packet_tables(packets), path, output_format(path))
    df = view_dataframe(session)
    if ext == ".parquet":
        df.to_parquet(path, index=False)
    elif ext in (".csv", ".txt", ""):
        df.to_csv(path, index=False)
    elif ext == ".jsonl":
        df.to_json(path, orient="records", lines=True)
    else:
        raise ValueError(f"unknown export format {ext!r} (use .csv, .parquet, .jsonl, .pcapng or .pcap)")
    return len(df)
