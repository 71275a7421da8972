"""`logger=wandb`: one Weights & Biases run per training run, its local files under `<run dir>/wandb/`.

Config: the resolved config (nested, as W&B shows it) plus `run_info` (the provenance tags). Every logged row
carries `global_step`, the x-axis of every chart (`define_metric`), so a resumed run's curves continue where
the checkpoint was even though W&B's own `_step` counts on. Files at the end: `run.save` (W&B uploads them
with the run); `checkpoints/best.pt` as a `model` artifact when `logger.log_model=true`. The run ends with exit
code 0 (finished), 130 for a signal, 1 otherwise. Console capture is off: train.log is saved at the end.

`mode=offline` writes only the local folder (`wandb sync <run dir>/wandb/offline-run-*` uploads it later);
`mode=online` needs a login, and W&B's own service rides out a network that drops mid-run.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from deepfake.errors import UserError
from deepfake.tracking.run_info import RunInfo
from deepfake.tracking.tracker import Row, Tracker

log = logging.getLogger("deepfake.tracking")

EXIT_CODES = {"end": 0, "interrupt": 130}  # abort and crash: 1
STEP = "global_step"


def _import_wandb() -> Any:
    try:
        import wandb
    except ImportError as e:
        raise UserError(f"logger=wandb needs Weights & Biases ({e}): pip install 'deepfake[wandb]'") from None
    return wandb


class WandbTracker(Tracker):
    name = "wandb"

    def __init__(self, cfg: Any, info: RunInfo) -> None:
        self.wandb = _import_wandb()
        self.cfg, self.info = cfg, info
        self.run: Any = None
        self.run_id = info.resumed.get("wandb", {}).get("id")  # None: W&B makes one

    def where(self) -> str:
        return "W&B" if self.cfg.mode == "online" else str(self.info.run_dir / "wandb")

    def fix(self) -> str:
        return "check the network and `wandb login`, or run with logger.wandb.mode=offline and `wandb sync` later"

    def ids(self) -> dict[str, str]:
        if self.run is None:
            return {}
        return {"id": self.run.id, "project": str(self.run.project), "mode": self.cfg.mode}

    def transient(self, error: BaseException) -> bool:
        return isinstance(error, self.wandb.errors.CommError | ConnectionError | TimeoutError)

    def open(self) -> None:
        wandb, cfg, info = self.wandb, self.cfg, self.info
        try:
            self.run = wandb.init(
                project=cfg.project, entity=cfg.entity, name=cfg.name or info.name, group=cfg.group or info.group,
                tags=[str(t) for t in cfg.tags] or None, mode=cfg.mode, dir=str(info.run_dir), id=self.run_id,
                resume="allow", config={**info.config, "run_info": info.tags}, reinit="create_new",
                settings=wandb.Settings(console="off", init_timeout=30),
            )  # fmt: skip
        except (wandb.errors.UsageError, wandb.errors.AuthenticationError) as e:
            raise UserError(
                f"logger=wandb: {e}. Log in (`wandb login`, or set WANDB_API_KEY), or use logger.wandb.mode=offline"
            ) from None
        self.run.define_metric(STEP)
        self.run.define_metric("*", step_metric=STEP, step_sync=True)
        if cfg.mode == "offline":
            folder = Path(self.run.dir).parent
            log.info(
                "wandb: offline run %s in %s; upload it with: wandb sync %s", self.run.id, folder, folder
            )

    def log_rows(self, rows: list[Row]) -> None:
        for step, values, _ in rows:  # one call per step: W&B's row is one step's scalars
            self.run.log({**values, STEP: step})

    def log_files(self, files: list[tuple[Path, str]]) -> None:
        model = [p for p, _ in files if p.suffix == ".pt"]
        for path, _ in files:
            if path.suffix != ".pt":
                self.run.save(str(path), base_path=str(self.info.run_dir), policy="now")
        if model:
            artifact = self.wandb.Artifact(f"model-{self.run.id}", type="model")
            for path in model:
                artifact.add_file(str(path))
            self.run.log_artifact(artifact, aliases=["best", "latest"])

    def finish(self, outcome: str) -> None:
        self.run.finish(exit_code=EXIT_CODES.get(outcome, 1))
