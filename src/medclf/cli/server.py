"""``medclf-server`` (``make server``): the team's back end, PostgreSQL and MLflow's tracking
server on it, for searches shared by many workers (medclf.tracking.team); prints the
``logger.mlflow.tracking_uri=`` and ``hydra.sweeper.storage=`` overrides to paste."""

from __future__ import annotations

from pathlib import Path

import hydra
from omegaconf import DictConfig, OmegaConf

from medclf.cli import exit_on_user_error
from medclf.config import CONF_DIR


def _task(cfg: DictConfig) -> int:
    from medclf.tracking.team import serve_team

    return serve_team(
        Path(cfg.dir),
        host=str(cfg.host),
        port=int(cfg.port),
        db_port=int(cfg.db_port),
        database=cfg.database,
        optuna_database=str(cfg.optuna_database),
        artifacts=cfg.artifacts,
        experiment=str(cfg.experiment),
        mlflow_workers=int(cfg.mlflow_workers),
        allowed_hosts=[str(h) for h in OmegaConf.to_container(cfg.allowed_hosts)],
    )


@hydra.main(version_base="1.3", config_path=str(CONF_DIR), config_name="server")
def _hydra_main(cfg: DictConfig) -> None:
    code = exit_on_user_error(_task, cfg, "server")
    if code:
        raise SystemExit(code)


def main() -> None:
    _hydra_main()


if __name__ == "__main__":
    main()
