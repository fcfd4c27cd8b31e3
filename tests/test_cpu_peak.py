"""cpu_peak_gflops: the measured compute roof the attention benchmark divides by."""
import pytest

import longcat
from longcat import _C


def test_fma_peak_on_every_isa_copy(cpu_isa):
    assert _C.cpu_peak_gflops("fma") > 0


def test_bf16dot_needs_avx512bf16(cpu_isa):
    if cpu_isa in ("avx512bf16", "amx"):
        assert _C.cpu_peak_gflops("bf16dot") > 0
    else:
        with pytest.raises(ValueError, match="'bf16dot'.*needs the avx512bf16 ISA level"):
            _C.cpu_peak_gflops("bf16dot")


def test_unknown_mix_names_the_argument():
    with pytest.raises(ValueError, match="argument 'mix' must be 'fma' or 'bf16dot', got 'fp64'"):
        _C.cpu_peak_gflops("fp64")
    assert longcat.cpu_isa() in longcat.cpu_isas_available()
