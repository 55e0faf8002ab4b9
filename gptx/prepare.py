"""`python -m gptx.prepare`, the command's first name; the code lives in gptx.tools.prepare."""

import sys

from gptx.tools.prepare import main

if __name__ == "__main__":
    sys.exit(main())
