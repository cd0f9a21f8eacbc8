"""`python -m tinygpt` runs the command line."""
import sys

from tinygpt.cli.main import main

sys.exit(main())
