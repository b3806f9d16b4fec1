"""Post-training data: chat conversations and preference pairs, from a tokenizer folder's template
to packed, resumable batches.

Modules: ``template`` (`ChatTemplate`, a folder's chat template rendered in the jinja sandbox of
``sandbox``), ``encode`` (`ChatEncoder`: rows → ids and the mask of the trained tokens),
``store`` (encoded sequences on disk), ``prepare`` (rows read and encoded into the shared cache),
``packing`` (whole sequences packed into rows), ``loader`` (`ChatLoader`, `PreferenceLoader`),
``tasks`` (the generated arithmetic task) and ``run`` (`ChatRunData`, a chat or preference
run's data). Their public names are `tjx.data`'s.
"""
