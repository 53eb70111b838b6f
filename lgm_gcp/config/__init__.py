"""Config schemas, ConfigStore registration and the strict validator (knows no torch)."""

from lgm_gcp.config.register import register_schemas
from lgm_gcp.config.validate import ConfigError, validate

__all__ = ["ConfigError", "register_schemas", "validate"]
