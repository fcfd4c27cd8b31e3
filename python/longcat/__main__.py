import sys

from longcat.cli import console_main

sys.exit(console_main())
