"""Entry point of the worker zygote: ``python -m longcat.envs.service.worker --zygote FD``."""
import sys

from .workers import zygote_main

if __name__ == "__main__":
    if len(sys.argv) != 3 or sys.argv[1] != "--zygote":
        sys.exit("usage: python -m longcat.envs.service.worker --zygote FD")
    zygote_main(int(sys.argv[2]))
