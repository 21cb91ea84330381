"""`python -m animal_sync`: the same CLI as the `animal-sync` console script."""

import sys

from .cli import main

sys.exit(main())
