"""Attention benchmark (MLA, SSA, Zig-Zag); the same code as `longcat bench attention` (python/longcat/bench/attention.py).
Usage: python bench/attention.py [--device cuda] [--quick] [--out DIR]"""
import sys

from longcat.bench.attention import main

if __name__ == "__main__":
    main(sys.argv[1:])
