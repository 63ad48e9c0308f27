"""The `ml_platform` code location: the default config, from the environment's settings."""

from ml_platform.defs.definitions import build_definitions
from ml_platform.lib.config import load_config
from ml_platform.lib.settings import Settings

settings = Settings.from_env()
defs = build_definitions(load_config(settings.config_path), settings)
