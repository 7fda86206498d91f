import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "scripts"))  # notebook_setup.py, for the structure tests
os.environ.setdefault("PRUNING_LAB_STRICT", "1")
