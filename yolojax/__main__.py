"""``python -m yolojax ...`` is the ``yolojax`` command (see :mod:`yolojax.cli`)."""
import sys

from yolojax.cli import main

sys.exit(main())
