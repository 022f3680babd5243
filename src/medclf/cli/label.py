"""``medclf-label data_dir=DIR 'classes=[a,b]'`` (in a checkout also ``python label.py``):
label images in the browser, with a trained model's suggestions (medclf.labelling)."""

from __future__ import annotations

import hydra
from omegaconf import DictConfig, ListConfig, OmegaConf

from medclf.cli import exit_on_user_error
from medclf.config import CONF_DIR


def _list(value) -> list | None:
    if value is None or value == "":
        return None
    if isinstance(value, ListConfig | list | tuple):
        return [str(v) for v in OmegaConf.to_container(value) if v is not None] or None
    return [str(value)]


def _task(cfg: DictConfig):
    from medclf.labelling.app import open_session, serve

    ckpts = None
    if cfg.ckpt_path or cfg.run_id:  # only then torch is imported
        from medclf.inference.predict import checkpoint_paths

        ckpts = checkpoint_paths(cfg.ckpt_path, cfg.run_id, cfg.tracking_uri or "")
    window = cfg.dicom_window
    session = open_session(
        cfg.data_dir,
        classes=_list(cfg.classes),
        multi_label=bool(cfg.multi_label),
        output=cfg.output,
        ckpt_paths=ckpts,
        order=str(cfg.order),
        dicom_window=OmegaConf.to_container(window) if isinstance(window, ListConfig) else window,
        cache_dir=cfg.cache_dir,
        token=cfg.token,
        audit=cfg.get("audit"),
    )
    return serve(session, str(cfg.host), int(cfg.port), _list(cfg.allowed_hosts))


@hydra.main(version_base="1.3", config_path=str(CONF_DIR), config_name="label")
def _hydra_main(cfg: DictConfig) -> None:
    exit_on_user_error(_task, cfg, "label")


def main() -> None:
    _hydra_main()


if __name__ == "__main__":
    main()
