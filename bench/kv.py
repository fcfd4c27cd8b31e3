"""KV swap benchmark; the same code as `longcat bench kv` (python/longcat/bench/kv.py).
Usage: python bench/kv.py [--device cuda] [--quick] [--out DIR]"""
import sys

from longcat.bench.kv import main

if __name__ == "__main__":
    main(sys.argv[1:])
