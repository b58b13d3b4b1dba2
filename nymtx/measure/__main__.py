import sys

from nymtx.measure.cli import main

sys.exit(main())
