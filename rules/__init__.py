"""Built-in rule files (YAML), shipped as package data under ``pfconvert.builtin_rules``."""
