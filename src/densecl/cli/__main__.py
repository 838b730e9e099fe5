import sys

from densecl.cli import main

sys.exit(main())
