"""Serving benchmark; the same code as `longcat bench serve` (python/longcat/bench/serve.py).
Usage: python bench/serve.py [--quick] [--out DIR]"""
import sys

from longcat.bench.serve import main

if __name__ == "__main__":
    main(sys.argv[1:])
