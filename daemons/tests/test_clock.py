"""The receiver's wall clock: time.time, or shifted by the seconds an offset file holds."""
import time

from osam.common import clock


def test_without_the_variable_it_is_time_time(monkeypatch):
    monkeypatch.delenv(clock.OFFSET_FILE_ENV, raising=False)
    assert clock.wall_clock() is time.time


def test_an_offset_file_jumps_it_forward_and_back(monkeypatch, tmp_path):
    offset = tmp_path / "offset"
    offset.write_text("7200\n")
    monkeypatch.setenv(clock.OFFSET_FILE_ENV, str(offset))
    monkeypatch.setattr(clock, "REREAD", 0.0)
    now = clock.wall_clock()
    assert abs(now() - (time.time() + 7200)) < 5
    offset.write_text("-1800")
    assert abs(now() - (time.time() - 1800)) < 5
    offset.write_text("")           # being rewritten: the last offset holds
    assert abs(now() - (time.time() - 1800)) < 5
