import collections
import os

import pytest

import longcat


def _isas_to_test() -> list:
    """Every ISA copy this CPU can run, or those LONGCAT_TEST_ISAS names ("active": only the
    copy chosen at start-up). CI's second build sets it: that job checks the installed wheel,
    and the first job already ran every copy of the same kernel sources."""
    available = longcat.cpu_isas_available()
    only = os.environ.get("LONGCAT_TEST_ISAS", "").strip()
    if not only:
        return available
    wanted = [longcat.cpu_isa()] if only == "active" else [s.strip() for s in only.split(",")]
    missing = [s for s in wanted if s not in available]
    if missing:
        raise pytest.UsageError(f"LONGCAT_TEST_ISAS: {missing} not available here (available: {available})")
    return wanted


@pytest.fixture(params=_isas_to_test())
def cpu_isa(request):
    """Runs the test once per ISA level available here (each compiled copy gets tested), restoring the active level afterwards."""
    before = longcat.cpu_isa()
    longcat.set_cpu_isa(request.param)
    yield request.param
    longcat.set_cpu_isa(before)


def pytest_terminal_summary(terminalreporter):
    """What this machine did not run, one line per skip reason with its count (pytest's -rs gives
    a line per test location): no GPU, no AMX, a missing optional tool... stay visible."""
    skipped = terminalreporter.stats.get("skipped", [])
    if not skipped:
        return
    counts = collections.Counter()
    for report in skipped:
        reason = report.longrepr[2] if isinstance(report.longrepr, tuple) else str(report.longrepr)
        counts[reason.removeprefix("Skipped: ")] += 1
    terminalreporter.section("skipped, by reason")
    shown = 20
    for reason, n in counts.most_common(shown):
        terminalreporter.write_line(f"{n:6d}  {reason[:200]}")
    if len(counts) > shown:
        rest = sum(n for _, n in counts.most_common()[shown:])
        terminalreporter.write_line(f"{rest:6d}  ({len(counts) - shown} other reasons; `pytest -rs` lists them all)")
