"""``python -m langneurons.cli``: the command line (what torchrun and accelerate launch)."""

import sys

from . import main

sys.exit(main())
