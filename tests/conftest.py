import pytest

import longcat


def available_isas() -> list[str]:
    """Every CPU ISA level this machine can run, lowest first (each compiled copy gets tested)."""
    order = ["scalar", "avx2", "avx512", "avx512bf16", "amx"]
    return order[: order.index(longcat._C.cpu_isa_detected()) + 1]


@pytest.fixture(params=available_isas())
def cpu_isa(request):
    """Runs the test once per ISA level available here, restoring the active level afterwards."""
    before = longcat.cpu_isa()
    longcat.set_cpu_isa(request.param)
    yield request.param
    longcat.set_cpu_isa(before)
