"""The model: registries of backbones, losses, optimizers and schedulers (``registry``), the
networks (``backbones``, ``monai3d``, ``nasnet``), the AUCMEDI ``head``, the computation
(``network``) and meaning of its outputs (``outputs``), the LightningModule (``module``),
``losses``, ``metrics``, ``optim`` and ``checkpoint`` loading."""
