import math

import pytest

from bot.model.units import format_change, format_value


@pytest.mark.parametrize("value, unit, shown", [
    (0.07, "ratio", "7%"),
    (0.0734, "ratio", "7.34%"),
    (0.00001, "ratio", "0.001%"),
    (93.2, "percent", "93.2%"),
    (0.25, "seconds", "250 ms"),
    (1.5, "seconds", "1.5 s"),
    (90, "seconds", "1.5 min"),
    (7200, "seconds", "2 h"),
    (3 * 86400, "seconds", "3 d"),
    (0.0000002, "seconds", "0.2 µs"),
    (29.5, "days", "29.5 d"),
    (0.5, "days", "12 h"),
    (-2, "days", "-2 d"),  # an expired certificate
    (1.6e9, "bytes", "1.49 GiB"),
    (512, "bytes", "512 B"),
    (0, "bytes", "0 B"),
    (None, "ratio", "n/a"),
    (math.nan, "seconds", "NaN"),
    (math.inf, "bytes", "+Inf"),
])
def test_values_read_with_their_unit(value, unit, shown):
    assert format_value(value, unit) == shown


@pytest.mark.parametrize("change, unit, shown", [
    (0.06, "ratio", "+6 pp"),
    (-0.72, "ratio", "-72 pp"),
    (-1.5, "percent", "-1.5 pp"),
    (0.0, "ratio", "+0 pp"),
    (-0.25, "seconds", "-250 ms"),
    (2 * 1024**2, "bytes", "+2 MiB"),
])
def test_changes_carry_their_sign_and_a_ratio_changes_in_points(change, unit, shown):
    assert format_change(change, unit) == shown
