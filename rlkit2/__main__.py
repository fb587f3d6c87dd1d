"""``python -m rlkit2 COMMAND ...``: the ``rlkit2`` command without the console script on the PATH."""

import sys

from rlkit2.commands import MODULE_FORM, main

if __name__ == "__main__":
    sys.exit(main(sys.argv[1:], form=MODULE_FORM))
