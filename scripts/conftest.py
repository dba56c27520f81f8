"""Make the scripts in this folder importable by their tests (pytest runs with
--import-mode=importlib, which does not put a test's folder on sys.path)."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
