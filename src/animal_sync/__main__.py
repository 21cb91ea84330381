"""`python -m animal_sync` and the `animal-sync` console script: the CLI, as a process of its own.

Start-up imports some 640 modules whose objects live as long as the process and are never garbage, yet allocating
them makes the collector pass over them about 130 times before the first request (some 25 ms of 300, issue 19).
So the collector waits while the CLI is imported, and what the import made is frozen out of its sight
(`gc.freeze`) before it resumes. Only a process started here does this: importing `animal_sync.cli`, as tests and
other programs do, leaves their collector as it was.
"""

import gc
import sys


def main() -> int:
    gc.disable()
    try:
        from .cli import main as cli_main
    finally:
        gc.freeze()  # the modules' objects outlive every collection: later ones need not scan them again
        gc.enable()
    return cli_main()


if __name__ == "__main__":
    sys.exit(main())
