"""``python -m tb_activations``: the same as the ``tb-activations`` command."""

import sys

from tb_activations.cli import main

sys.exit(main())
