"""Training: chips and split -> a trained network in a model folder (see :mod:`.train`).

Modules: :mod:`.data` (datasets and loaders), :mod:`.losses`, :mod:`.tasks` (what differs between
segmentation and chip classification), :mod:`.module` (the LightningModule), :mod:`.train`
(:func:`train_model`, the entry point).
"""
