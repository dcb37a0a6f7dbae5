"""python -m ringtrain: the same as the `ringtrain` command (launch/cli.py)."""
import sys

from ringtrain.launch.cli import main

sys.exit(main())
