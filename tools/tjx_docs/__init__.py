"""tjx's documentation site: `docs/` and the repository's READMEs staged with references generated
from the code (config keys from tjx-core's schema, presets, both apps' flags, each package's public
API), built by MkDocs with the Material theme in strict mode, in a scratch venv of pinned versions.

``tools/docs build`` (or ``./pants run docs:build``) writes the static site; ``tools/docs serve``
shows it on a local port. Not shipped; nothing imports it but its tests.
"""
