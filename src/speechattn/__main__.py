import sys

from speechattn.cli import main

sys.exit(main())
