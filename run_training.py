"""``python -m run_training [--config configs/default.yaml] [--set k=v] [--run-dir DIR | --resume DIR]``.

The same as ``mtl train``; the config defaults to ``configs/default.yaml``.
"""

import sys

from mtl.cli import main

if __name__ == "__main__":
    argv = sys.argv[1:]
    if "--config" not in argv and "--resume" not in argv:
        argv = ["--config", "configs/default.yaml", *argv]
    sys.exit(main(["train", *argv]))
