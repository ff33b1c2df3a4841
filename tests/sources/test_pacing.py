"""The automatic burst allowance every rate-limited source uses (file, synthetic)."""

from __future__ import annotations

from sources.pacing import AUTO_BURST_MAX, AUTO_BURST_MIN, auto_burst


def test_auto_burst_covers_fifty_milliseconds_within_bounds() -> None:
    """1,000/s absorbs 50 late records; a slow rate still gets 2 (so one late wake-up loses nothing); huge is capped."""
    assert auto_burst(1000) == 50
    assert auto_burst(0.5) == AUTO_BURST_MIN == 2
    assert auto_burst(1e9) == AUTO_BURST_MAX
