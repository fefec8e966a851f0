"""Channel and preset files: typed models and the loader."""

from .loader import Config, load_config
from .models import Channel, ImagePreset, Output, Preset, Rules, recipe_hash

__all__ = [
    "Channel", "Config", "ImagePreset", "Output", "Preset", "Rules", "load_config", "recipe_hash",
]
