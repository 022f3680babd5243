"""The data: reading any image or volume (``io``), data sources as sample tables
(``sources``), ``splits``, ``transforms``, ``sampling``, ``metadata`` encoding and the
LightningDataModules (``datamodule``)."""
