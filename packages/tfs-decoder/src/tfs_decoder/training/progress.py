"""A one-line training progress display: step, loss, tokens/s, elapsed time and ETA."""

from __future__ import annotations

import sys
import time
from typing import TextIO

from tfs_core.validation import require_positive_ints


def format_duration(seconds: float) -> str:
    """``75.4`` -> ``"1:15"``, ``3725`` -> ``"1:02:05"``; ``"?"`` for a negative or NaN value."""
    if not seconds >= 0.0 or seconds == float("inf"):
        return "?"
    total = round(seconds)
    hours, rest = divmod(total, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}"


class ProgressBar:
    """Shows training progress on one line of ``stream`` (stderr by default).

    On a terminal the line is redrawn in place (``\\r``) at every :meth:`update`; elsewhere
    (a log file, a pipe, CI) a plain line is written every ``log_interval`` steps and at
    the last step, so logs stay readable. A disabled bar (``enabled=False``, e.g. on DDP
    ranks other than 0) writes nothing.

    The ETA extrapolates the time per step measured since the bar started (or since the
    first :meth:`update` after a resume, through ``start_step``).
    """

    def __init__(
        self,
        total: int,
        *,
        start_step: int = 0,
        enabled: bool = True,
        log_interval: int = 10,
        stream: TextIO | None = None,
        width: int = 20,
    ) -> None:
        if total < 0:
            raise ValueError(f"total: expected an int >= 0, got {total!r}")
        require_positive_ints(log_interval=log_interval)
        self.total = total
        self.start_step = start_step
        self.enabled = enabled
        self.log_interval = log_interval
        self.stream: TextIO = stream if stream is not None else sys.stderr
        self.width = width
        isatty = getattr(self.stream, "isatty", None)
        self.interactive = bool(isatty()) if callable(isatty) else False
        self._start = time.perf_counter()
        self._drawn = False  # a \r line is on screen and must be ended before other output
        self._last_draw = float("-inf")

    def start(self, step: int = 0) -> None:
        """(Re)start the clock at ``step`` steps done: elapsed time and ETA count from here."""
        self.start_step = step
        self._start = time.perf_counter()

    def render(self, step: int, *, loss: float | None, tokens_per_s: float | None) -> str:
        """The progress line for ``step`` steps done (no line ending)."""
        elapsed = time.perf_counter() - self._start
        done = step - self.start_step
        left = self.total - step
        eta = elapsed / done * left if done > 0 else float("nan")
        fraction = step / self.total if self.total else 1.0
        filled = min(self.width, int(fraction * self.width))
        bar = "#" * filled + "." * (self.width - filled)
        parts = [f"[{bar}] step {step}/{self.total}"]
        if loss is not None:
            parts.append(f"loss {loss:.4f}")
        if tokens_per_s is not None:
            parts.append(f"{tokens_per_s:,.0f} tok/s")
        parts.append(f"elapsed {format_duration(elapsed)}")
        parts.append(f"eta {format_duration(eta)}")
        return " | ".join(parts)

    def update(
        self, step: int, *, loss: float | None = None, tokens_per_s: float | None = None
    ) -> None:
        """Report that ``step`` of ``total`` steps are done."""
        if not self.enabled:
            return
        if self.interactive:
            now = time.perf_counter()
            # Redraw at most ~10 times a second: fast GPU steps would flood the terminal.
            if now - self._last_draw < 0.1 and step != self.total:
                return
            self._last_draw = now
            self.stream.write("\r" + self.render(step, loss=loss, tokens_per_s=tokens_per_s))
            self.stream.write("\x1b[K")  # clear what a longer previous line left behind
            self._drawn = True
        elif step % self.log_interval == 0 or step == self.total:
            self.stream.write(self.render(step, loss=loss, tokens_per_s=tokens_per_s) + "\n")
        self.stream.flush()

    def write(self, line: str) -> None:
        """Print ``line`` on its own line, above the progress line on a terminal."""
        if not self.enabled:
            return
        if self._drawn:
            self.stream.write("\r\x1b[K")
        self.stream.write(line + "\n")
        self._drawn = False
        self.stream.flush()

    def close(self) -> None:
        """End the progress line (a terminal's cursor moves to the next line)."""
        if self.enabled and self._drawn:
            self.stream.write("\n")
            self.stream.flush()
            self._drawn = False
