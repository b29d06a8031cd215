import sys

from reabsnet.cli import main

sys.exit(main())
