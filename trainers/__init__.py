"""Importing this package registers every trainer with the engine's TRAINER_REGISTRY."""
from . import zsclip, coop, cocoop, kgcoop, maple, ivlp, promptsrc, pva, ship, clip_adapter, lpclip, tip_adapter  # noqa: F401
