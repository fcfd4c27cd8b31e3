"""Attention benchmark (MLA, SSA, Zig-Zag); the same code as `longcat bench mla` (python/longcat/bench/mla.py).
Usage: python bench/mla.py [--device cuda] [--quick] [--out DIR]"""
import sys

from longcat.bench.mla import main

if __name__ == "__main__":
    main(sys.argv[1:])
