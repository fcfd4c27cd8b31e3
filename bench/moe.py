"""MoE layer benchmark; the same code as `longcat bench moe` (python/longcat/bench/moe.py).
Usage: python bench/moe.py [--device cuda] [--quick] [--out DIR]"""
import sys

from longcat.bench.moe import main

if __name__ == "__main__":
    main(sys.argv[1:])
