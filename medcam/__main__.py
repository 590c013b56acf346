import sys

from medcam.cli import main

sys.exit(main())
