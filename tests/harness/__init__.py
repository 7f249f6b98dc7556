"""Local stand-ins for what AWS provides around the functions: API Gateway, Lambda, moto, a fake Stripe."""

import sys
from pathlib import Path

# Lambda puts the layer's content on the path; do the same for everything run from here.
_LAYER = str(Path(__file__).resolve().parents[2] / "layers" / "shared")
if _LAYER not in sys.path:
    sys.path.insert(0, _LAYER)
