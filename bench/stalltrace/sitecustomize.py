"""Loaded when ``bench/stalltrace`` is on PYTHONPATH: traces a server's loop stalls."""

import os
import sys

_path = os.environ.get("STALLTRACE_FILE")
if _path and "sentinel.cli.server" in sys.orig_argv:
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    import stall_tracer

    stall_tracer.install(_path, float(os.environ.get("STALLTRACE_MS", "5")))
