import sys

from hnetbench.cli import main

sys.exit(main())
