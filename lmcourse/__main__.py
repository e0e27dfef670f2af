import sys

from lmcourse.cli import main

sys.exit(main())
