"""Learning-to-copy benchmark (the tiny preset vs a plain transformer); the same code as
`longcat bench copy_learning` (python/longcat/bench/copy_learning.py).
Usage: python bench/copy_learning.py [--quick] [--out DIR]"""
import sys

from longcat.bench.copy_learning import main

if __name__ == "__main__":
    main(sys.argv[1:])
