"""Named model presets (`<family>@<scale>`) and config validation for every model family."""

from hnetbench.baselines.presets import (
    PresetError,
    list_presets,
    list_scales,
    preset_dict,
    register_preset,
)
from hnetbench.baselines.validate import validate_model_config

__all__ = [
    "PresetError",
    "list_presets",
    "list_scales",
    "preset_dict",
    "register_preset",
    "validate_model_config",
]
