"""``python -m minibatch_rx``: the ``minibatch`` command (see :mod:`minibatch_rx.cli`)."""

import sys

from minibatch_rx.cli import main

if __name__ == "__main__":
    sys.exit(main())
