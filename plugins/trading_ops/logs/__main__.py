import sys

from trading_ops.logs.cli import main

sys.exit(main())
