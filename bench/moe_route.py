"""MoE routing benchmark; the same code as `longcat bench moe_route` (python/longcat/bench/moe_route.py).
Usage: python bench/moe_route.py [--device cuda] [--quick] [--out DIR]"""
import sys

from longcat.bench.moe_route import main

if __name__ == "__main__":
    main(sys.argv[1:])
