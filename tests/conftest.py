import pytest

import longcat


@pytest.fixture(params=longcat.cpu_isas_available())
def cpu_isa(request):
    """Runs the test once per ISA level available here (each compiled copy gets tested), restoring the active level afterwards."""
    before = longcat.cpu_isa()
    longcat.set_cpu_isa(request.param)
    yield request.param
    longcat.set_cpu_isa(before)
