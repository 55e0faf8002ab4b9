"""Stand-alone commands around runs: reproduce, compare, evaluate, generate, export, prepare, bench.

Each is `python -m gptx.NAME` (or the `gptx-NAME` console script) and builds on the core modules one
level up; nothing in the core imports from here.
"""
