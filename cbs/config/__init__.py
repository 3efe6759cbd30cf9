"""Configuration: the registries of named choices, the key rules, validation of a whole config before any compute."""
