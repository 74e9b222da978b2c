"""The version of sg_keras, in one place (the package metadata reads it too)."""

__version__ = "0.3.0"
