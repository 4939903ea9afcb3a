"""`python -m nplm_kernel.cli`: the `nplm` command."""

import sys

from . import main

sys.exit(main())
