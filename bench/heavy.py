"""Heavy Thinking benchmark; the same code as `longcat bench heavy` (python/longcat/bench/heavy.py).
Usage: python bench/heavy.py [--model CKPT] [--quick] [--out DIR]"""
import sys

from longcat.bench.heavy import main

if __name__ == "__main__":
    main(sys.argv[1:])
