"""Config schemas, ConfigStore registration and the strict validator. No module here imports torch; the
registration imports the option classes (by their ``_target_``) when it derives their schemas."""

from lgm_gcp.config.register import register_schemas
from lgm_gcp.config.validate import ConfigError, validate

__all__ = ["ConfigError", "register_schemas", "validate"]
