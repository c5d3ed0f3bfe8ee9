"""Watching a child process: the peak memory of its process tree (/proc) and the counts
its progress bar shows on a pseudo-terminal, with when each first showed."""

from __future__ import annotations

import codecs
import fcntl
import os
import pty
import re
import struct
import termios
import threading
import time

BAR_COUNT = re.compile(r"(\d+)/(\d+) \[[^\]]*\]")  # tqdm's "135/300 [00:02<00:02, 61.2 images/s]"


class TreeMemory(threading.Thread):
    """Polls /proc for the peak RSS (and PSS) summed over a process and its descendants.

    Cheap on purpose, since it runs beside the ingest it measures: children are
    found through /proc/PID/task/TID/children, RSS is read every `interval` and
    PSS (smaps_rollup, which walks page tables) every fifth time. The largest single
    process's peak is its VmHWM (not the child's ru_maxrss, which for a process started
    by vfork includes the peak of this benchmark's own process).
    """

    def __init__(self, pid: int, interval: float = 0.2) -> None:
        super().__init__(daemon=True)
        self.pid = pid
        self.interval = interval
        self.peak_rss = self.peak_pss = self.peak_processes = self.peak_process = 0
        self.stop = threading.Event()

    def run(self) -> None:
        polls = 0
        while not self.stop.is_set():
            tree = self._tree()
            status = [_proc_kb(f"/proc/{pid}/status", "VmRSS:", "VmHWM:") for pid in tree]
            self.peak_rss = max(self.peak_rss, sum(s["VmRSS:"] for s in status))
            self.peak_process = max([self.peak_process, *(s["VmHWM:"] for s in status)])
            if polls % 5 == 0:
                pss = sum(_proc_kb(f"/proc/{pid}/smaps_rollup", "Pss:")["Pss:"] for pid in tree)
                self.peak_pss = max(self.peak_pss, pss)
            self.peak_processes = max(self.peak_processes, len(tree))
            polls += 1
            self.stop.wait(self.interval)

    def _tree(self) -> list[int]:
        tree, frontier = [], [self.pid]
        while frontier:
            pid = frontier.pop()
            tree.append(pid)
            try:
                for task in os.listdir(f"/proc/{pid}/task"):
                    with open(f"/proc/{pid}/task/{task}/children") as f:
                        frontier.extend(int(child) for child in f.read().split())
            except OSError:  # gone, or a kernel without the children file
                continue
        return tree


def _proc_kb(path: str, *keys: str) -> dict[str, int]:
    """Fields of a /proc file such as /proc/PID/status, in kB (0 for a process gone)."""
    found = dict.fromkeys(keys, 0)
    try:
        with open(path) as f:
            for line in f:
                fields = line.split()
                if fields and fields[0] in found:
                    found[fields[0]] = int(fields[1])
    except (OSError, ValueError, IndexError):
        pass
    return found


class ProgressClock(threading.Thread):
    """Reads a process's stderr from a pseudo-terminal and notes when its progress bar
    first showed each count of images: (seconds, count) in `points`; all text in `text`.

    The ingest sees a terminal, so it draws its bar (tqdm, at most every 0.1 s) as it
    does for a user; the bar advances after each batch is written.
    """

    def __init__(self, master_fd: int, started: float) -> None:
        super().__init__(daemon=True)
        self.fd = master_fd
        self.started = started
        self.points: list[tuple[float, int]] = []
        self.text = ""

    def run(self) -> None:
        decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        pending, seen = "", set()
        while True:
            try:
                data = os.read(self.fd, 65536)
            except OSError:  # EIO: every process holding the terminal has closed it
                break
            if not data:
                break
            now = time.perf_counter() - self.started
            chunk = decoder.decode(data)
            self.text += chunk
            pending += chunk
            while found := BAR_COUNT.search(pending):  # a refresh may arrive in pieces
                count = int(found.group(1))
                if count not in seen:
                    seen.add(count)
                    self.points.append((now, count))
                pending = pending[found.end():]
            pending = pending[-512:]
        os.close(self.fd)


def terminal() -> tuple[int, int]:
    """(read end, write end) for the ingest's stderr: a pseudo-terminal 120 columns wide,
    so that it draws its progress bar; a pipe where the system lends no pseudo-terminal
    (then there is no bar and no steady rate)."""
    try:
        master, slave = pty.openpty()
    except OSError:
        return os.pipe()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 40, 120, 0, 0))
    return master, slave
