"""LongCat-Flash model benchmark (forward_paged vs transformers); the same code as
`longcat bench model` (python/longcat/bench/model.py).
Usage: python bench/model.py [--device cuda] [--quick] [--out DIR]"""
import sys

from longcat.bench.model import main

if __name__ == "__main__":
    main(sys.argv[1:])
