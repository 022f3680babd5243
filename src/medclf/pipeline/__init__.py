"""From a composed config to a trained, tested and tracked model: build the parts
(``build``), run one training (``train``) or evaluation (``evaluate``), with
cross-validation (``cv``) and ``check_only`` (``checks``) above it (``task``), resume,
Ctrl-C and DDP beside it."""
