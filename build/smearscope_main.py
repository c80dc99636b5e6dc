"""Entry point of the desktop executable: the launcher, imported as a module so its paths point into the bundle."""

import sys

from edge_app.launcher import main

if __name__ == "__main__":
    sys.exit(main())
