"""clipadapt: CLIP adaptation methods (ZeroshotCLIP, CoOp, CLIP-Adapter, SHIP, PVA) as Dassl trainers."""
__version__ = "0.1.0"

from . import world  # noqa: E402,F401  (registers the built-in world's CLIP with the CLIP backend)
