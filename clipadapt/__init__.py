"""clipadapt: CLIP adaptation methods (ZeroshotCLIP, CoOp, CLIP-Adapter, SHIP, PVA) as Dassl trainers."""
__version__ = "0.1.0"
