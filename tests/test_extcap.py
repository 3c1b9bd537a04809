"""`lonscope extcap` driven the way Wireshark drives an extcap program; the FIFO is read by
tshark.  One test also lets tshark itself discover and start the extcap (needs a non-root
user for WIRESHARK_EXTCAP_DIR, which Wireshark ignores when run as root)."""
from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import time

import pytest

from analyzer.live.emulator import NiEmulator
from analyzer.live.serial_ni import NI_MODE_L2, NI_MODE_L5

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def extcap(lonscope_cmd, *args, **kw):
    return subprocess.run(lonscope_cmd + ["extcap", *args], capture_output=True, text=True, timeout=60, **kw)


def test_discovery_output(lonscope_cmd):
    r = extcap(lonscope_cmd, "--extcap-interfaces", "--extcap-version=4.0")
    assert r.returncode == 0
    lines = r.stdout.splitlines()
    assert lines[0].startswith("extcap {version=")
    names = re.findall(r"^interface \{value=([^}]+)\}\{display=[^}]+\}$", r.stdout, re.M)
    assert names == ["lonscope-serial", "lonscope-netdev"]
    r = extcap(lonscope_cmd, "--extcap-dlts", "--extcap-interface", "lonscope-serial")
    assert r.stdout.strip().splitlines() == [
        "dlt {number=1}{name=EN10MB}{display=Ethernet (LonTalk frames in CN/IP, UDP 1628)}",
        "dlt {number=147}{name=USER0}{display=Raw LonTalk frames with CRC-16 (with --raw-user0)}"]
    r = extcap(lonscope_cmd, "--extcap-config", "--extcap-interface", "lonscope-serial")
    calls = re.findall(r"\{call=(--[a-z0-9-]+)\}", r.stdout)
    assert calls == ["--device", "--framing", "--baud", "--raw-user0"]
    for line in r.stdout.splitlines():
        assert re.fullmatch(r"(arg|value) (\{[a-z]+=[^}]*\})+", line), line
    r = extcap(lonscope_cmd, "--extcap-config", "--extcap-interface", "lonscope-netdev")
    assert re.findall(r"\{call=(--[a-z0-9-]+)\}", r.stdout) == ["--netdev", "--raw-user0"]
    r = extcap(lonscope_cmd, "--extcap-config", "--extcap-interface", "nope")
    assert r.returncode == 1 and "unknown extcap interface 'nope'" in r.stderr


def frames(n):
    from dissectors.lon import build_frame
    return [build_frame(src_subnet=1, src_node=1 + i % 100, dst_subnet=2, dst_node=9, domain=b"\x07",
                        pdu="apdu", apdu=bytes([0x10, i])) for i in range(n)]


@pytest.mark.parametrize("raw", [False, True])
def test_capture_into_fifo_read_by_tshark(tmp_path, lonscope_cmd, tshark, raw):
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    items = frames(8)
    with NiEmulator("u61") as emu:
        args = ["--capture", "--extcap-interface", "lonscope-serial", "--fifo", str(fifo),
                "--device", emu.path, "--framing", "u61"] + (["--raw-user0"] if raw else [])
        proc = subprocess.Popen(lonscope_cmd + ["extcap", *args], stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True)
        fields = ["frame.encap_type", "frame.comment"] + (["data.data"] if raw else ["lon.srcnode", "cnip.seqno"])
        cmd = [tshark, "-i", str(fifo), "-c", str(len(items)), "-T", "fields", "-E", "separator=|"]
        for f in fields:
            cmd += ["-e", f]
        reader = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        deadline = time.monotonic() + 30
        while not emu.modes and time.monotonic() < deadline:
            time.sleep(0.05)
        assert emu.modes == [NI_MODE_L2]
        time.sleep(0.3)
        emu.send_many([(f, i % 4, 0x100 + i if i % 2 else None) for i, f in enumerate(items)])
        out, err = reader.communicate(timeout=60)
        proc.send_signal(signal.SIGTERM)           # how Wireshark stops an extcap
        proc.communicate(timeout=30)
        time.sleep(0.1)
        assert emu.modes == [NI_MODE_L2, NI_MODE_L5]      # switched back to layer 5
    rows = [line.split("|") for line in out.splitlines()]
    assert len(rows) == len(items), err
    for i, (row, f) in enumerate(zip(rows, items)):
        comment = f"phase={i % 4} ssi=0x{0x100 + i:04x}" if i % 2 else f"phase={i % 4}"
        assert row[1] == comment
        if raw:
            assert row[0] == "45" and row[2] == f.hex()     # WTAP_ENCAP_USER0
        else:
            assert row[0] == "1" and int(row[2], 16) == 1 + i % 100 and row[3] == str(i + 1)


def test_capture_error_is_one_line(tmp_path, lonscope_cmd):
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    r = extcap(lonscope_cmd, "--capture", "--extcap-interface", "lonscope-serial", "--fifo", str(fifo),
               "--device", "/dev/ttyNOPE7")
    assert r.returncode == 1
    assert r.stderr.strip() == "Error: serial:/dev/ttyNOPE7: no such device (is the interface plugged in? " \
                               "ls /dev/ttyUSB* /dev/ttyACM*)"


STRICT = os.environ.get("LONSCOPE_STRICT") == "1"


def _python_for(user_cmd: list[str], env: dict) -> tuple[str, dict] | None:
    """An interpreter (and PYTHONPATH) with which `user_cmd` (the user tshark runs as) can
    import this checkout: this interpreter, else the system python3 of the same version
    with this venv's site-packages (a venv under /root is not executable for others)."""
    import sysconfig
    site = sysconfig.get_paths()["purelib"]
    cands = [(sys.executable, {}),
             (f"/usr/bin/python{sys.version_info[0]}.{sys.version_info[1]}", {"PYTHONPATH": f"{site}:{ROOT}"})]
    for exe, extra in cands:
        if not os.path.exists(exe):
            continue
        probe = subprocess.run(user_cmd + [exe, "-c", "import analyzer.live, analyzer.cmd_extcap, serial"],
                               capture_output=True, text=True, cwd=ROOT, env={**env, **extra})
        if probe.returncode == 0:
            return exe, extra
    return None


def test_tshark_discovers_and_runs_the_extcap(tmp_path, tshark):
    """tshark lists the installed extcap and captures through it (-o extcap.lonscope_serial.device:PATH).
    Wireshark ignores WIRESHARK_EXTCAP_DIR when run as root, so as root tshark runs as the
    unprivileged user `nobody` (runuser) with a wrapper that starts a Python it can execute."""
    user = []
    if os.geteuid() == 0:
        if shutil.which("runuser") is None:
            msg = "running as root without runuser (util-linux): cannot run tshark unprivileged"
            pytest.fail(f"LONSCOPE_STRICT=1 but {msg}") if STRICT else pytest.skip(msg)
        user = ["runuser", "-u", "nobody", "--"]
    # pytest's tmp_path lies below a 0700 directory: use one the unprivileged user can enter
    import pathlib
    import tempfile
    base = pathlib.Path(tempfile.mkdtemp(prefix="lonscope-extcap-"))
    request_cleanup = lambda: shutil.rmtree(base, ignore_errors=True)  # noqa: E731
    try:
        _discover_and_run(base, tshark, user)
    finally:
        request_cleanup()


def _discover_and_run(tmp_path, tshark, user):
    d = tmp_path / "extcap"
    r = subprocess.run([sys.executable, "-m", "analyzer", "extcap", "--install", "--install-dir", str(d)],
                       capture_output=True, text=True, cwd=ROOT)
    assert r.returncode == 0, r.stderr
    assert (d / "lonscope").read_text().startswith("#!/bin/sh\nexec ")
    os.chmod(tmp_path, 0o755)
    os.chmod(d, 0o755)
    env = {"PATH": os.environ.get("PATH", ""), "HOME": str(tmp_path), "WIRESHARK_EXTCAP_DIR": str(d)}
    found = _python_for(user, env)
    if found is None:
        msg = (f"no Python that {'nobody' if user else 'this user'} can execute imports this checkout "
               f"({sys.executable}, /usr/bin/python{sys.version_info[0]}.{sys.version_info[1]})")
        pytest.fail(f"LONSCOPE_STRICT=1 but {msg}") if STRICT else pytest.skip(msg)
    exe, extra = found
    # the wrapper runs that interpreter on this checkout, as the (unprivileged) user
    wrapper = d / "lonscope"
    exports = "".join(f'export {k}="{v}"\n' for k, v in extra.items())
    wrapper.write_text(f'#!/bin/sh\ncd "{ROOT}"\n{exports}exec "{exe}" -m analyzer extcap "$@"\n')
    r = subprocess.run(user + [tshark, "-D"], capture_output=True, text=True,
                       env=env, timeout=60)
    assert "lonscope-serial (LonTalk: USB/serial network interface in layer-2 mode (lonscope))" in r.stdout
    items = frames(5)
    with NiEmulator("u61") as emu:
        os.chmod(emu.path, 0o666)
        proc = subprocess.Popen(user + [tshark, "-i", "lonscope-serial",
                                 "-o", f"extcap.lonscope_serial.device:{emu.path}", "-c", "5",
                                 "-T", "fields", "-e", "lon.srcnode", "-e", "frame.comment"],
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
        deadline = time.monotonic() + 40
        while not emu.modes and time.monotonic() < deadline:
            time.sleep(0.05)
        assert emu.modes, "tshark did not start the extcap"
        time.sleep(0.3)
        emu.send_many([(f, 1, None) for f in items])
        out, err = proc.communicate(timeout=60)
    assert out.splitlines() == [f"0x{1 + i:02x}\tphase=1" for i in range(5)], err


def test_extcap_capture_filter(tmp_path, lonscope_cmd, tshark):
    """--extcap-capture-filter: checked the way Wireshark checks it (an error line on stdout
    = invalid), then applied to the capture; tshark reads the FIFO."""
    r = extcap(lonscope_cmd, "--extcap-interface", "lonscope-serial", "--extcap-capture-filter", "lon.srcnode == 3")
    assert r.returncode == 0 and r.stdout == ""
    r = extcap(lonscope_cmd, "--extcap-interface", "lonscope-serial", "--extcap-capture-filter", "udp.port == 1")
    assert "only lon.* fields" in r.stdout
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    items = frames(40)                    # src nodes 1..40, domain 07
    keep = [f for i, f in enumerate(items) if (1 + i % 100) % 4 == 0]
    with NiEmulator("u61") as emu:
        args = ["--capture", "--extcap-interface", "lonscope-serial", "--fifo", str(fifo), "--device", emu.path,
                "--extcap-capture-filter", "lon.srcnode in {4 8 12 16 20 24 28 32 36 40} && lon.domain == 07"]
        proc = subprocess.Popen(lonscope_cmd + ["extcap", *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        reader = subprocess.Popen([tshark, "-i", str(fifo), "-c", str(len(keep)), "-T", "fields", "-e", "lon.srcnode"],
                                  stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        deadline = time.monotonic() + 30
        while not emu.modes and time.monotonic() < deadline:
            time.sleep(0.05)
        time.sleep(0.3)
        emu.send_many([(f, 0, None) for f in items])
        out, err = reader.communicate(timeout=60)
        proc.send_signal(signal.SIGTERM)
        proc.communicate(timeout=30)
    assert [int(x, 16) for x in out.split()] == [4 * k for k in range(1, 11)], err
