"""``medclf-automl datamodule=folder datamodule.data_dir=DIR budget=2h``: from a folder of
images to a tested stacked ensemble in one command, within a wall-time budget.

The steps, each an ordinary medclf command run in this process (its command line is in the
log, the state and the report, so every step can be run again by hand):

1. read the data and pick the image size, batch size, recipe and a short list of backbones
   (medclf.pipeline.automl_data), each with its reason in the log;
2. a pruned Optuna search (``medclf-train -m hparams_search=optuna``, the resumable sweeper;
   on a team server when ``hydra.sweeper.storage`` names one), one trial at a time while
   the budget still holds the trial, the cross-validation after it and the report; the
   trials never see the test split (``test=false``);
3. the ``automl.top_k`` best trials trained again as ``automl.folds``-fold
   cross-validation runs (``medclf-train cv.folds=K``);
4. stacked on their out-of-fold predictions (medclf.pipeline.ensemble), which tests the
   ensemble and its members once on the test split;
5. one report, ``automl.html`` (medclf.pipeline.automl_report): the leaderboard, the
   ensemble against its members with paired tests, the budget and each step's command.

Every training gets ``trainer.max_time`` from what the budget has left, so the budget (wall
time from the command's start, summed over continued sessions) holds within about 10 %. The
state (``automl_state.json``) is written as each step ends and every few seconds: after
Ctrl-C or a kill the same command continues (finished trials, members and steps are kept;
the search's interrupted trial runs again).
"""

from __future__ import annotations

import copy
import logging
import math
import threading
import time
from collections.abc import Callable
from pathlib import Path

from omegaconf import DictConfig, OmegaConf, open_dict

from medclf.errors import ConfigError
from medclf.pipeline.automl_state import State, max_time, parse_budget, quote
from medclf.tracking import names

log = logging.getLogger("medclf.automl")

FINAL_SHARE = 0.05  # of the budget held back for stacking and the report (at least MIN_FINAL)
MIN_FINAL = 20.0
FOLD_FACTOR = 1.5  # a cross-validation fold's time against a search trial's: it also tests,
# reports and predicts its held-out fold (1.3-2.5 measured on tiny data on a loaded CPU)
TRAIN_SHARE = 0.7  # of a run's time its training may take (trainer.max_time): the rest is set-up
MIN_TRAIN = 5.0  # seconds: the shortest trainer.max_time given
TARGET_TRIALS = 10  # the search trials a trial's time limit plans for (fewer when max_trials)


class AutoML:
    """One session of an AutoML (see the module's docstring)."""

    def __init__(
        self,
        cfg: DictConfig,
        train_argv: list[str],
        hydra_argv: list[str],
        argv: list[str],
        train: Callable[[list[str]], int],
        started: float,
    ) -> None:
        self.cfg, self.train_argv, self.hydra_argv, self.argv = cfg, train_argv, hydra_argv, argv
        self.train = train
        self.folder = Path(cfg.paths.output_dir)
        self.total = parse_budget(cfg.budget)
        self.state = State(self.folder / names.AUTOML_STATE, started)
        node = cfg.automl
        self.top_k, self.folds = int(node.top_k), int(node.folds)
        self.max_trials = int(node.max_trials)
        if self.top_k < 1 or self.folds < 2 or self.max_trials < 1:
            raise ConfigError(
                f"automl.top_k={self.top_k}, automl.folds={self.folds} and automl.max_trials="
                f"{self.max_trials}: use top_k >= 1, folds >= 2 and max_trials >= 1."
            )
        self.final = max(MIN_FINAL, FINAL_SHARE * self.total)
        if self.total < 3 * self.final:
            raise ConfigError(
                f"budget={cfg.budget}: too short for a search trial, the cross-validation of "
                f"the best one and the report; give at least budget={int(3 * self.final)}s."
            )
        self.search_dir = self.folder / "search"
        self.study_name = f"automl-{self.folder.name}"

    # --- time ---------------------------------------------------------------------------
    def left(self) -> float:
        return self.total - self.state.spent()

    def trial_seconds(self) -> float | None:
        """A search trial's wall time as measured: the mean of completed ones (pruned ones
        stop early), else the longest."""
        complete = self.state.data.get("complete_s", [])
        other = self.state.data.get("other_s", [])
        if complete:
            return sum(complete) / len(complete)
        return max(other) if other else None

    def cv_need(self, trial: float, members: int | None = None, folds: int | None = None):
        return (members or self.top_k) * (folds or self.folds) * trial * FOLD_FACTOR

    # --- steps --------------------------------------------------------------------------
    def _train(self, name: str, argv: list[str]) -> float:
        """Run ``medclf-train ARGV``; a failure (or Ctrl-C) ends the session with a message
        to run the same command again. Returns its wall time."""
        command = f"medclf-train {quote(argv)}"
        log.info("%s: %s", name, command)
        start = time.time()
        status = self.train(argv)
        seconds = time.time() - start
        if status != 0:
            self.state.step(name, command, seconds, f"exit {status}")
            raise ConfigError(
                f"{name} did not finish (exit status {status}); see its log above. Run the "
                "same medclf-automl command to continue."
            )
        self.state.step(name, command, seconds)
        return seconds

    def run(self) -> Path:
        from medclf.pipeline.automl_report import write_report

        stop = threading.Event()
        beat = threading.Thread(target=self.state.beat, args=(stop,), daemon=True)
        beat.start()
        try:
            self.state.data["argv"] = self.argv
            self.state.data["budget_s"] = self.total
            if self.state.data["sessions"] > 1:
                log.info(
                    "continuing %s (session %d): %.0f s of the %.0f s budget spent",
                    self.folder,
                    self.state.data["sessions"],
                    self.state.before,
                    self.total,
                )
            self._close_orphans()
            plan = self._plan()
            base = [*self.train_argv, *plan["picked"]]
            self._search(base, plan["backbones"])
            members = self._members(base)
            ensemble = self._ensemble(members)
            page = write_report(self, plan, ensemble)
            log.info(
                "AutoML done in %.0f s of a %.0f s budget: ensemble run %s; report %s",
                self.state.spent(),
                self.total,
                ensemble.get("run_id"),
                page,
            )
            return page
        finally:
            stop.set()
            beat.join(timeout=5)
            self.state.save()

    def _close_orphans(self) -> None:
        from medclf.tracking.ensembles import close_running_under

        uri, experiment = self._tracking()
        closed = close_running_under(uri, experiment, str(self.folder))
        if closed:
            log.info("%d MLflow run(s) of an interrupted session marked KILLED", closed)

    def _tracking(self) -> tuple[str, str]:
        from medclf.pipeline.ensemble import _experiment, tracking_uri

        return tracking_uri(self.cfg), _experiment(self.cfg)

    def _plan(self) -> dict:
        """The data's summary and the picked settings (read once, kept in the state)."""
        if "plan" in self.state.data:
            return self.state.data["plan"]
        from medclf.models.registry import import_plugins
        from medclf.pipeline.automl_data import plan, read_summary
        from medclf.pipeline.build import make_datamodule
        from medclf.pipeline.job import data_name

        start = time.time()
        import_plugins(OmegaConf.select(self.cfg, "imports"))
        looked = copy.deepcopy(self.cfg)  # any batch size reads the data
        with open_dict(looked):
            looked.datamodule.batch_size, looked.datamodule.drop_last = 1, False
        datamodule = make_datamodule(looked)
        summary = read_summary(datamodule, data_name(self.cfg))
        backbones = OmegaConf.select(self.cfg, "automl.backbones")
        found = plan(summary, self.cfg, self.train_argv, backbones and list(backbones))
        self.state.data["plan"] = {**found.as_dict(), "picked": found.overrides()}
        self.state.step(
            "read the data", f"medclf-check-data {quote(self.train_argv)}", time.time() - start
        )
        return self.state.data["plan"]

    def _study(self):
        """The search's study, None before its first trial."""
        import optuna

        from medclf.tracking.store import sqlite_path

        database = sqlite_path(self._storage())
        if database is not None and not database.exists():
            return None
        try:
            return optuna.load_study(study_name=self.study_name, storage=self._storage())
        except KeyError:
            return None

    def _storage(self) -> str:
        given = [
            a.split("=", 1)[1] for a in self.hydra_argv if a.startswith("hydra.sweeper.storage=")
        ]
        return given[-1] if given else f"sqlite:///{self.search_dir}/optuna.db"

    def _search_argv(self, base: list[str], backbones: list[str], n_trials: int, cap: float):
        space = [
            f"backbone.name={backbones[0]}"
            if len(backbones) == 1
            else f"backbone.name=choice({','.join(backbones)})",
            "optimizer.lr=tag(log,interval(1e-4,3e-3))",
            "optimizer.weight_decay=tag(log,interval(1e-6,1e-2))",
            "loss=choice(ce,focal)",
            "head.fcl_dropout=choice(true,false)",
        ]
        given = {a.split("=", 1)[0].lstrip("+~") for a in base}
        space = [s for s in space if s.split("=", 1)[0] not in given]
        pruner = str(OmegaConf.select(self.cfg, "automl.pruner") or "none")
        return [
            "-m",
            "hparams_search=optuna",
            *base,
            *space,
            "test=false",
            "logger.mlflow.save_model=false",
            max_time(cap),
            f"hydra.sweep.dir={self.search_dir}",
            f"hydra.sweeper.study_name={self.study_name}",
            f"hydra.sweeper.storage={self._storage()}",
            f"hydra.sweeper.n_trials={n_trials}",
            "hydra.sweeper.params=null",
            f"hydra/sweeper/pruner={pruner}",
            "hydra.sweeper.max_failure_rate=1.0",
            *[a for a in self.hydra_argv if not a.startswith("hydra.sweeper.storage=")],
        ]

    def _search(self, base: list[str], backbones: list[str]) -> None:
        """Trials one at a time while the budget holds one more, the cross-validation of the
        best ones and the report."""
        from optuna.trial import TrialState

        if self.state.data.get("search_done"):
            return
        while True:
            study = self._study()
            trials = study.get_trials(deepcopy=False) if study is not None else []
            finished = sum(t.state.is_finished() for t in trials)
            if finished >= self.max_trials:
                log.info("search: %d trials, automl.max_trials reached", finished)
                break
            room = self.left() - self.final
            measured = self.trial_seconds()
            # the trials still planned and the cross-validation after them fit in what is left
            planned = max(1, min(self.max_trials, TARGET_TRIALS) - finished)
            cap = room / (planned + self.cv_need(1.0))
            if measured is not None and room < measured + self.cv_need(measured):
                log.info(
                    "search: stopping after %d trial(s): %.0f s left, a trial takes %.0f s and "
                    "the cross-validation of the best %d about %.0f s",
                    finished,
                    self.left(),
                    measured,
                    self.top_k,
                    self.cv_need(measured),
                )
                break
            argv = self._search_argv(
                base, backbones, finished + 1, max(MIN_TRAIN, cap * TRAIN_SHARE)
            )
            self.state.data["search_command"] = f"medclf-train {quote(argv)}"
            seconds = self._train(f"search trial {finished + 1}", argv)
            study = self._study()
            last = max(study.get_trials(deepcopy=False), key=lambda t: t.number)
            key = "complete_s" if last.state == TrialState.COMPLETE else "other_s"
            self.state.data.setdefault(key, []).append(round(seconds, 2))
            self.state.save()
        self.state.data["search_done"] = True
        self.state.save()

    def _members(self, base: list[str]) -> list[str]:
        """The best trials as cross-validation runs; their MLflow run ids."""
        from medclf.pipeline.ensemble import train_member
        from medclf.search.study import override_value

        members = self.state.data.get("members")
        if members is None:
            study = self._study()
            complete = [t for t in study.trials if t.state.name == "COMPLETE"] if study else []
            if not complete:
                raise ConfigError(
                    "no search trial completed within the budget; give more (budget=...) or "
                    "fewer epochs (trainer.max_epochs=...)."
                )
            reverse = study.direction.name == "MAXIMIZE"
            best = sorted(complete, key=lambda t: t.value, reverse=reverse)[: self.top_k]
            members = [
                {
                    "trial": t.number,
                    "value": t.value,
                    "run_id": None,
                    "params": [f"{k}={override_value(v)}" for k, v in t.params.items()],
                }
                for t in best
            ]
            self._fit_members(members)
            self.state.data["members"] = members
            self.state.save()
        folds = int(self.state.data.get("folds", self.folds))
        for i, member in enumerate(members):
            if member["run_id"]:
                continue
            todo = sum(1 for m in members if not m["run_id"])
            measured = self.state.data.get("member_s")  # a trained member's wall time
            if i and measured and todo * measured > self.left() - self.final:
                log.info(
                    "budget: %d member(s) left out (%.0f s left, a member takes %.0f s)",
                    todo,
                    self.left(),
                    measured,
                )
                members[:] = [m for m in members if m["run_id"]]
                self.state.save()
                break
            room = max(MIN_TRAIN, (self.left() - self.final) / (todo * folds) * TRAIN_SHARE)
            argv = [
                *base,
                *member["params"],
                f"cv.folds={folds}",
                "logger.mlflow.save_model=false",
                f'logger.mlflow.run_name="automl trial {member["trial"]}"',
                max_time(room),
            ]
            command = f"medclf-train {quote(argv)}"
            log.info(
                "member %d of %d (trial %d): %s", i + 1, len(members), member["trial"], command
            )
            start = time.time()
            member["run_id"] = train_member(
                self.cfg, argv, self.folder / f"member_{member['trial']}", self.train
            )
            member["command"] = command
            self.state.data["member_s"] = time.time() - start
            self.state.step(
                f"member trial {member['trial']} ({folds} folds)", command, time.time() - start
            )
        return [m["run_id"] for m in members]

    def _fit_members(self, members: list[dict]) -> None:
        """Fewer members, then fewer folds, when the budget cannot hold them all."""
        trial = self.trial_seconds() or 0.0
        room = self.left() - self.final
        folds = self.folds
        while len(members) > 1 and self.cv_need(trial, len(members), folds) > room:
            dropped = members.pop()
            log.info(
                "budget: trial %d left out of the ensemble (%.0f s left)",
                dropped["trial"],
                self.left(),
            )
        while folds > 2 and self.cv_need(trial, len(members), folds) > room:
            folds -= 1
            log.info("budget: %d folds instead of %d (%.0f s left)", folds, self.folds, self.left())
        self.state.data["folds"] = folds

    def _ensemble(self, run_ids: list[str]) -> dict:
        from medclf.pipeline.ensemble import build_ensemble

        done = self.state.data.get("ensemble")
        if done:
            return done
        cfg = copy.deepcopy(self.cfg)
        metalearner = str(OmegaConf.select(cfg, "automl.metalearner") or "logistic")
        with open_dict(cfg):
            cfg.metalearner = metalearner
            cfg.metalearner_params = {}
        out = self.folder / "ensemble"
        command = (
            f"medclf-ensemble {quote(self.train_argv)} runs=[{','.join(run_ids)}] "
            f"metalearner={metalearner} output_dir={out}"
        )
        start = time.time()
        built = build_ensemble(cfg, run_ids, out, command, {names.AUTOML_DIR: str(self.folder)})
        done = {
            "run_id": built.run_id,
            "folder": str(built.folder),
            "report": str(built.report),
            "metrics": {k: v for k, v in built.metrics.items() if not math.isnan(v)},
            "members": [{"name": m.name, "run_id": m.run.run_id} for m in built.members],
            "command": command,
        }
        self.state.data["ensemble"] = done
        self.state.step("stack", command, time.time() - start)
        return done
