"""A training run's data: its settings, its preparation before the run, and its loaders.

Modules: ``config`` (`DataConfig`, the trainer's ``data:`` section), ``rules`` (the checks
between its fields and the model, its local sources, a resumed chat run's template),
``tokenizer`` (the tokenizer a run asks for, and how messages name the caller's keys),
``prepare`` (a source, a weighted mixture or the digits images prepared into a `RunData`),
``data`` (`RunData`: the run's loaders, validation batches and ``data.json``) and ``setup``
(a `DataConfig`'s data prepared and its training loader, as an app calls them). Their public names
are `tjx.data`'s.
"""
