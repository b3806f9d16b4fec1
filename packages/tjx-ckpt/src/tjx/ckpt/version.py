"""tjx-ckpt's version, in a module of its own so `metadata` can read it without importing
the package's `__init__` (which imports `metadata`: a circle). The wheel's version and
`tools/release` read this line."""

__version__ = "0.19.0"
