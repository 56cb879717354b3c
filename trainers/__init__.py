"""Importing this package registers every trainer with the engine's TRAINER_REGISTRY."""
from . import zsclip, coop, clip_adapter, ship  # noqa: F401
