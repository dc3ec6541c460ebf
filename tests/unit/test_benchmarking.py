"""The benchmark scripts' shared timing loop: warm-up, rotated rounds, untimed setup."""

from __future__ import annotations

import pytest

from ssaf.benchmarking import median_ms, table_head, timings


def test_rounds_rotate_the_order_after_the_warm_up_and_every_call_is_timed():
    ran: list[str] = []
    calls = {name: (lambda name=name: ran.append(name)) for name in "abc"}
    times = timings(calls, repeats=4, warmup=2)
    assert ran[:6] == list("abcabc")  # the warm-up: every candidate, in the given order
    assert ran[6:] == [*"abc", *"bca", *"cab", *"abc"]  # round i starts i places along
    assert {name: len(t) for name, t in times.items()} == {"a": 4, "b": 4, "c": 4}
    assert all(t >= 0 for ts in times.values() for t in ts)


def test_setup_runs_before_every_call_and_its_result_is_the_calls_arguments():
    made: list[int] = []

    def setup() -> tuple[int, int]:
        made.append(len(made))
        return made[-1], 10

    got: list[tuple[int, int]] = []
    median_ms(lambda i, ten: got.append((i, ten)), repeats=3, warmup=1, setup=setup)
    assert got == [(0, 10), (1, 10), (2, 10), (3, 10)]


@pytest.mark.parametrize("repeats,warmup", [(0, 2), (3, -1)])
def test_no_repeats_or_a_negative_warm_up_is_rejected(repeats, warmup):
    with pytest.raises(ValueError, match="repeats must be >= 1 and warmup >= 0"):
        timings({"a": lambda: None}, repeats, warmup=warmup)


def test_table_head_has_one_separator_cell_per_column():
    assert table_head("a", "b c") == "| a | b c |\n|---|---|"
