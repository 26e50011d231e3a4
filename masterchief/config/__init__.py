"""Configuration: YAML in, a typed frozen Config out; secrets and vault references."""
