"""Run a command under a process that reaps orphans at once, as a real init (systemd, tini) does.

`python tests/support/reaper.py CMD ARGS...`: becomes the child subreaper (Linux prctl), runs
CMD, passes SIGTERM and SIGINT on to it, reaps every process orphaned below it, and exits with
CMD's exit code.

Why: the embedded postmaster is a daemon whose parent exits; its orphan is reparented to an
init. This machine's pid 1 leaves orphans unreaped, as zombies, for a long while, and a zombie
still counts as "running" for psutil: a postmaster stopped long ago would look alive. Under
this reaper, a postmaster that exits is gone at once, as on a production host.
"""

from __future__ import annotations

import ctypes
import os
import signal
import subprocess
import sys

PR_SET_CHILD_SUBREAPER = 36


def main(command: list[str]) -> int:
    if ctypes.CDLL(None, use_errno=True).prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) != 0:
        raise OSError(ctypes.get_errno(), "prctl(PR_SET_CHILD_SUBREAPER) failed")
    child = subprocess.Popen(command)
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda s, _f: child.send_signal(s))
    while True:
        try:
            pid, status = os.wait()  # the child, or any orphan reparented to us
        except ChildProcessError:
            return child.returncode if child.returncode is not None else 1
        except InterruptedError:
            continue
        if pid == child.pid:
            child.returncode = os.waitstatus_to_exitcode(status)
            return child.returncode


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
