"""Progress over a known number of items for long work that has no bar of its own (issue 23 item 8): the
images of ``task=predict``, the fits of a transfer study, the cases of the prediction bench.

In a terminal (stderr is a TTY) a tqdm bar counts the items; elsewhere (``> log``, nohup, SLURM) a plain log
line says ``<what>: i/n <unit> (<elapsed>, about <left> left)`` after every item, or at most every
``min_interval`` seconds, and always after the last one.
"""

from __future__ import annotations

import logging
import sys
import time

log = logging.getLogger("fundus2ffa")


def _stderr_is_terminal() -> bool:
    try:
        return sys.stderr.isatty()
    except (AttributeError, ValueError):
        return False


def _duration(seconds: float) -> str:
    seconds = int(round(seconds))
    if seconds < 60:
        return f"{seconds} s"
    minutes, secs = divmod(seconds, 60)
    if minutes < 60:
        return f"{minutes} min {secs:02d} s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes:02d} min"


class Progress:
    """``with Progress(total, "predict", "images") as bar: ... bar.update(n, note)``; ``bar.done`` counts.

    Args:
        total: items to come.
        what: the work, as the lines and the bar name it.
        unit: what an item is (plural).
        min_interval: seconds between two lines without a terminal (0: a line per update).
        bar: force the bar (True) or the lines (False); None: a bar when stderr is a terminal.
    """

    def __init__(self, total: int, what: str, unit: str = "items", min_interval: float = 0.0, bar: bool | None = None,
                 logger: logging.Logger | None = None):
        self.total, self.what, self.unit = int(total), what, unit
        self.min_interval = float(min_interval)
        self.use_bar = _stderr_is_terminal() if bar is None else bar
        self.log = logger or log
        self.done = 0
        self._bar = None
        self._started = time.perf_counter()
        self._last_line = float("-inf")

    def __enter__(self) -> Progress:
        self._started = time.perf_counter()
        return self

    def _open_bar(self):
        """The tqdm bar, made at the first update (a process that never updates draws none: DDP ranks above 0)."""
        if self._bar is None:
            from tqdm.auto import tqdm

            self._bar = tqdm(total=self.total, desc=self.what, unit=self.unit.rstrip("s") or "it", file=sys.stderr,
                             dynamic_ncols=True, leave=True)
        return self._bar

    def __exit__(self, *exc) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None

    def line(self, note: str = "") -> str:
        elapsed = time.perf_counter() - self._started
        left = ""
        if 0 < self.done < self.total:
            left = f", about {_duration(elapsed / self.done * (self.total - self.done))} left"
        return f"{self.what}: {self.done}/{self.total} {self.unit}{f' ({note})' if note else ''} ({_duration(elapsed)}{left})"

    def update(self, count: int = 1, note: str = "") -> None:
        self.done += int(count)
        if self.use_bar:
            bar = self._open_bar()
            if note:
                bar.set_postfix_str(note, refresh=False)
            bar.update(int(count))
            return
        now = time.perf_counter()
        if self.done >= self.total or now - self._last_line >= self.min_interval:
            self._last_line = now
            self.log.info("%s", self.line(note))
