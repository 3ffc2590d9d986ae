"""Configs: dataclass schemas per section, YAML presets and ``--set a.b=c`` overrides."""

from fasterseg.config.core import apply_overrides, from_dict, load_config, load_yaml, to_dict

__all__ = ["apply_overrides", "from_dict", "load_config", "load_yaml", "to_dict"]
