"""`python -m gptx.reproduce`, the command's first name; the code lives in gptx.tools.reproduce."""

import sys

from gptx.tools.reproduce import main

if __name__ == "__main__":
    sys.exit(main())
