"""The one-line progress display."""

from __future__ import annotations

import io

import pytest

from tfs_decoder.training.progress import ProgressBar, format_duration


class FakeTerminal(io.StringIO):
    def isatty(self) -> bool:
        return True


@pytest.mark.parametrize(
    ("seconds", "text"),
    [(0.0, "0:00"), (75.4, "1:15"), (3725.0, "1:02:05"), (-1.0, "?"), (float("nan"), "?")],
)
def test_format_duration(seconds: float, text: str) -> None:
    assert format_duration(seconds) == text


def test_render_shows_step_loss_throughput_elapsed_and_eta() -> None:
    bar = ProgressBar(100, stream=io.StringIO())
    line = bar.render(25, loss=1.23456, tokens_per_s=12345.6)
    assert "step 25/100" in line
    assert "loss 1.2346" in line
    assert "12,346 tok/s" in line
    assert "elapsed 0:00" in line
    assert "eta 0:00" in line
    assert line.startswith("[#####...............]")
    assert "eta ?" in bar.render(0, loss=None, tokens_per_s=None)


def test_not_a_terminal_writes_a_line_every_log_interval_and_at_the_end() -> None:
    stream = io.StringIO()
    bar = ProgressBar(7, log_interval=3, stream=stream)
    for step in range(1, 8):
        bar.update(step, loss=float(step))
    bar.close()
    lines = stream.getvalue().splitlines()
    assert [line.split(" | ")[0].split()[-1] for line in lines] == ["3/7", "6/7", "7/7"]
    assert "\r" not in stream.getvalue()


def test_terminal_redraws_in_place_and_keeps_written_lines() -> None:
    stream = FakeTerminal()
    bar = ProgressBar(2, stream=stream)
    bar.update(1, loss=2.0)
    bar.write("step 1: val loss 1.5")
    bar.update(2, loss=1.0)  # the last step is always drawn, however soon
    bar.close()
    text = stream.getvalue()
    assert text.startswith("\r[")
    assert "\r\x1b[Kstep 1: val loss 1.5\n" in text
    assert "step 2/2" in text
    assert text.endswith("\n")


def test_disabled_bar_writes_nothing() -> None:
    stream = FakeTerminal()
    bar = ProgressBar(3, enabled=False, stream=stream)
    bar.update(3, loss=1.0)
    bar.write("hello")
    bar.close()
    assert stream.getvalue() == ""


def test_rejects_bad_arguments() -> None:
    with pytest.raises(ValueError, match=r"total: expected an int >= 0, got -1"):
        ProgressBar(-1)
    with pytest.raises(ValueError, match=r"log_interval: expected a positive int, got 0"):
        ProgressBar(3, log_interval=0)
