"""Grouped expert SwiGLU GEMM benchmark; the same code as `longcat bench moe_gemm`
(python/longcat/bench/moe_gemm.py). Usage: python bench/moe_gemm.py [--device cuda] [--quick] [--out DIR]"""
import sys

from longcat.bench.moe_gemm import main

if __name__ == "__main__":
    main(sys.argv[1:])
