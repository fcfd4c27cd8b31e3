"""Environment-scaling benchmark; the same code as `longcat bench envs` (python/longcat/bench/envs.py).
Usage: python bench/envs.py [--quick] [--out DIR]"""
import sys

from longcat.bench.envs import main

if __name__ == "__main__":
    main(sys.argv[1:])
