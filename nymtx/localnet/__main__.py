import sys

from nymtx.localnet.tap import main

sys.exit(main())
