"""Small helpers that run.py and queue_bench.py share: the log line, a free port, a process's
memory. Standard library only."""

import re
import socket
import sys
import time


def logger(tag):
    """log(msg): `[tag HH:MM:SS] msg` on stderr."""

    def log(msg):
        sys.stderr.write("[%s %s] %s\n" % (tag, time.strftime("%H:%M:%S"), msg))
        sys.stderr.flush()

    return log


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def proc_status(pid):
    """VmRSS and VmHWM in MiB, or None if the process is gone."""
    try:
        with open("/proc/%d/status" % pid) as f:
            text = f.read()
    except OSError:
        return None
    out = {}
    for key in ("VmRSS", "VmHWM"):
        m = re.search(r"^%s:\s+(\d+) kB" % key, text, re.M)
        out[key] = int(m.group(1)) / 1024.0 if m else None
    return out
