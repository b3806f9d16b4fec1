"""Model families, one folder each (``tjx.nn.families.<name>``): what only that family needs, its
Hugging Face config and tensor mapping among it.

Each folder declares itself once in its ``family.py`` (``FAMILY``, a `base.Family`);
``registry`` lists the folders, and the shared code looks a family up there (``load_hf``,
``save_hf``, the fields a checkpoint fixes) instead of naming it. ``parts`` builds the layers a
folder adds to the shared decoder. Adding a family: its folder, one line in ``registry`` (and in
``parts`` if it brings layers of its own), and the config fields of any new switch.
"""
