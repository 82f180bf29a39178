"""threestudio extension entry point: threestudio's launch.py imports this folder.

The components live in the ``lmcsds`` package beside this file. It is imported by its
absolute name, so the copy installed with ``pip install -e`` and the one found here are the
same module; without an install, this folder is put on ``sys.path`` first.
"""

import os
import sys

try:
    import lmcsds  # noqa: F401
except ImportError:
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import lmcsds.adapter.cpu_mode  # noqa: E402

lmcsds.adapter.cpu_mode.activate()  # only with LMCSDS_DEVICE=cpu; otherwise does nothing

import lmcsds.adapter.dense_renderer  # noqa: E402,F401  (each import registers components)
import lmcsds.adapter.guidance  # noqa: E402,F401
import lmcsds.adapter.prompt_processor  # noqa: E402,F401
import lmcsds.adapter.system  # noqa: E402,F401
import lmcsds.evaluation.supervised  # noqa: E402,F401  (the benchmark's ceiling)
