"""``python -m densecl ...`` (the form torchrun needs: ``torchrun ... -m densecl pretrain``)."""

import sys

from densecl.cli import main

sys.exit(main())
