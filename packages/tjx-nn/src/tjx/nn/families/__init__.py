"""Model families, one folder each (``tjx.nn.families.<name>``): what only that family needs, its
Hugging Face config and tensor mapping among it.
"""
