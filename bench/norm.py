"""RMSNorm benchmark; the same code as `longcat bench norm` (python/longcat/bench/norm.py).
Usage: python bench/norm.py [--device cuda] [--quick] [--out DIR]"""
import sys

from longcat.bench.norm import main

if __name__ == "__main__":
    main(sys.argv[1:])
