"""Moved: the gate builder is ``training/gate.py``, run by ``lrfr gate`` (same options).

    lrfr gate --student runs/lfw-cpu-dlib-student/last.pt --out runs/card/gated.pt
"""

from __future__ import annotations

import sys

from lrfr.cli import main

if __name__ == "__main__":
    sys.argv = ["lrfr", "gate", *sys.argv[1:]]
    main()
