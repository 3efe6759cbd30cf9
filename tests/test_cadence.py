"""Token cadences against points enumerated one by one."""

import pytest

from cbs import cadence


def points_in(before: int, after: int, points) -> bool:
  return any(before < p <= after for p in points)


@pytest.mark.parametrize("every", [1, 7, 64, 1000])
def test_crossed_is_a_multiple_in_the_step(every):
  multiples = range(every, 5000, every)
  for before, after in [(0, 1), (0, 63), (63, 64), (64, 65), (100, 1999), (999, 1000), (5, 5)]:
    assert cadence.crossed(before, after, every) == points_in(before, after, multiples)


def test_no_cadence_is_never_crossed():
  assert not cadence.crossed(0, 10**9, 0) and not cadence.crossed(0, 10**9, -1)


@pytest.mark.parametrize("start,per_doubling", [(100, 1), (100, 4), (3, 3)])
def test_log_spaced_points_are_start_times_powers_of_two(start, per_doubling):
  points = [start * 2 ** (k / per_doubling) for k in range(40)]
  for before in range(0, 3000, 37):
    for after in (before + 1, before + 50, before + 900):
      assert cadence.crossed_log_spaced(before, after, start, per_doubling) == points_in(
        before, after, points
      ), (before, after)
  assert cadence.log_points_up_to(start - 1, start, per_doubling) == 0
  assert cadence.log_points_up_to(start, start, per_doubling) == 1
  # One doubling holds per_doubling + 1 points, its two ends included (no float round-off).
  assert cadence.log_points_up_to(2 * start, start, per_doubling) == per_doubling + 1
