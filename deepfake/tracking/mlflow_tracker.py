"""`logger=mlflow`: one MLflow run per training run, through `MlflowClient` (no global active run).

Params: the resolved config, flattened. Metrics: `log_batch` calls of up to 1000 values, each at its optimizer
step and with the time it was measured. Tags: the run's provenance and `logger.mlflow.tags`. At the end:
the run's files as artifacts and the run's status (FINISHED, KILLED for a signal, FAILED otherwise).
A resumed run continues the same MLflow run id: params already there stay (MLflow forbids changing one; the
resume's overrides are tagged instead), new ones are added, metrics continue at the resumed step.

The client is `mlflow-skinny` (the `mlflow` extra): enough for a tracking server (http/https) or Databricks.
A local `sqlite:///` store needs the full `mlflow` package. MLflow's own HTTP retries (7, for minutes) are off
unless MLFLOW_HTTP_REQUEST_MAX_RETRIES is set: the sender retries in the background instead.
"""

from __future__ import annotations

import logging
import math
import os
import re
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from deepfake.errors import UserError
from deepfake.tracking.run_info import RunInfo
from deepfake.tracking.tracker import Row, Tracker

log = logging.getLogger("deepfake.tracking")

STATUS = {"end": "FINISHED", "interrupt": "KILLED"}  # abort and crash: FAILED
MAX_METRICS, MAX_PARAMS, MAX_TAGS = 1000, 100, 100  # per log_batch request (MLflow's limits)
MAX_PARAM_LENGTH = 6000
#: Tracking URI schemes: a server, Databricks, the local stores (a database needs the full `mlflow` package).
SCHEMES = ("http", "https", "databricks", "databricks-uc", "file", "sqlite", "postgresql", "mysql", "mssql")
DATABASES = ("sqlite", "postgresql", "mysql", "mssql")
#: Characters MLflow accepts in a param, metric or tag key.
_KEY = re.compile(r"[^\w\-. /]")


def _import_mlflow() -> Any:
    try:
        import mlflow
    except ImportError as e:
        raise UserError(
            f"logger=mlflow needs the MLflow client ({e}): pip install 'deepfake[mlflow]' (or mlflow-skinny)"
        ) from None
    return mlflow


class MlflowTracker(Tracker):
    name = "mlflow"

    def __init__(self, cfg: Any, info: RunInfo) -> None:
        mlflow = _import_mlflow()
        from mlflow import MlflowClient

        os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
        os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", "20")
        self.cfg, self.info = cfg, info
        self.uri = cfg.tracking_uri or mlflow.get_tracking_uri()
        check_uri(self.uri)
        try:
            self.client = MlflowClient(tracking_uri=self.uri)
        except Exception as e:  # a store this install cannot open
            which = (
                ""
                if cfg.tracking_uri
                else " (MLflow's default: logger.mlflow.tracking_uri and MLFLOW_TRACKING_URI are unset)"
            )
            if urlparse(self.uri).scheme.split("+")[0] in DATABASES:
                raise UserError(
                    f"logger.mlflow.tracking_uri={self.uri}{which} is a local database store, which needs the full "
                    "`mlflow` package (pip install mlflow; the extra installs only the mlflow-skinny client). Or "
                    "point it at a tracking server: logger.mlflow.tracking_uri=http://host:5000"
                ) from None
            raise UserError(f"logger.mlflow.tracking_uri={self.uri}{which}: {_first_line(e)}") from None
        self.run_id: str | None = None  # set once open() has fully succeeded
        self.experiment_id: str | None = None
        self._run: Any = None

    def where(self) -> str:
        return f"the MLflow tracking server at {self.uri}"

    def fix(self) -> str:
        return (
            "start it (mlflow server --backend-store-uri sqlite:///mlflow.db --host 127.0.0.1 --port 5000) or "
            "point logger.mlflow.tracking_uri (or MLFLOW_TRACKING_URI) at a running one"
        )

    def ids(self) -> dict[str, str]:
        if self.run_id is None:
            return {}
        return {"run_id": self.run_id, "experiment_id": str(self.experiment_id), "tracking_uri": self.uri}

    def transient(self, error: BaseException) -> bool:
        """Connection failures, timeouts, 429 and 5xx answers: the server is away or busy, not refusing."""
        import requests
        from mlflow.exceptions import MlflowException

        seen: BaseException | None = error
        while seen is not None:
            if isinstance(seen, requests.ConnectionError | requests.Timeout | ConnectionError | TimeoutError):
                return True
            if isinstance(seen, requests.HTTPError) and seen.response is not None:
                return seen.response.status_code == 429 or seen.response.status_code >= 500
            seen = seen.__cause__ or seen.__context__
        if isinstance(error, MlflowException):
            status = error.get_http_status_code()
            return status == 429 or status >= 500
        return False

    # ----- the run -----

    def open(self) -> None:
        """Idempotent: a retry after a failed params upload reuses the run made before it."""
        from mlflow.exceptions import MlflowException

        try:
            self._open()
        except MlflowException as e:
            if e.error_code == "ENDPOINT_NOT_FOUND":
                raise UserError(
                    f"logger.mlflow.tracking_uri={self.uri} answers 404 to MLflow's REST API: give the root "
                    "address of an MLflow tracking server (e.g. http://host:5000)"
                ) from None
            raise

    def _open(self) -> None:
        if self._run is None:
            self.experiment_id = self._experiment()
            run = self._continued()
            if run is None:
                tags = {**self._tags(), **{str(k): str(v) for k, v in self.cfg.tags.items()}}
                run = self.client.create_run(self.experiment_id, run_name=self._run_name(), tags=_clean(tags))
            else:
                self.client.update_run(run.info.run_id, status="RUNNING")
                resumed = {"resumed_at_step": str(self.info.start_step)}
                resumed["resume_overrides"] = self.info.tags.get("overrides", "")
                self._log_batch(run.info.run_id, tags=resumed)
            self._run = run
        done = dict(self._run.data.params)  # MLflow refuses to change a param: a resume adds only new ones
        params = {k: v[:MAX_PARAM_LENGTH] for k, v in _clean(self.info.params).items() if k not in done}
        self._log_batch(self._run.info.run_id, params=params)
        self.run_id = self._run.info.run_id

    def _experiment(self) -> str:
        from mlflow.exceptions import MlflowException

        name = self.cfg.experiment_name
        found = self.client.get_experiment_by_name(name)
        if found is None:
            try:
                return self.client.create_experiment(name)
            except MlflowException as e:  # another job of a sweep made it first
                found = self.client.get_experiment_by_name(name)
                if found is None:
                    raise e from None
        if found.lifecycle_stage == "deleted":
            raise UserError(
                f"the MLflow experiment {name!r} was deleted: restore it (mlflow experiments restore "
                f"--experiment-id {found.experiment_id}) or pick another logger.mlflow.experiment_name"
            )
        return found.experiment_id

    def _continued(self) -> Any:
        """The resumed run's MLflow run, if this server has it (None: a new MLflow run)."""
        from mlflow.exceptions import MlflowException

        saved = self.info.resumed.get("mlflow", {})
        run_id = saved.get("run_id")
        if not run_id:
            return None
        try:
            run = self.client.get_run(run_id)
        except MlflowException as e:
            if e.error_code != "RESOURCE_DOES_NOT_EXIST":
                raise
            run = None
        if run is None or run.info.lifecycle_stage == "deleted":
            log.warning(
                "mlflow: the resumed run's MLflow run %s is not on %s (was %s); logging into a new MLflow run",
                run_id, self.uri, saved.get("tracking_uri"),
            )  # fmt: skip
            return None
        return run

    def _run_name(self) -> str:
        return self.cfg.run_name or self.info.name

    def _tags(self) -> dict[str, str]:
        tags = dict(self.info.tags)
        if tags.get("git_commit"):
            tags["mlflow.source.git.commit"] = tags["git_commit"]
        tags["mlflow.source.name"] = "train.py"
        return tags

    def _log_batch(
        self, run_id: str, params: dict[str, str] | None = None, tags: dict[str, str] | None = None
    ) -> None:
        from mlflow.entities import Param, RunTag

        items = list((params or {}).items())
        for i in range(0, len(items), MAX_PARAMS):
            self.client.log_batch(run_id, params=[Param(k, v) for k, v in items[i : i + MAX_PARAMS]])
        items = list((tags or {}).items())
        for i in range(0, len(items), MAX_TAGS):
            self.client.log_batch(run_id, tags=[RunTag(k, v[:5000]) for k, v in items[i : i + MAX_TAGS]])

    # ----- data -----

    def log_rows(self, rows: list[Row]) -> None:
        from mlflow.entities import Metric

        assert self.run_id is not None
        metrics = [
            Metric(_KEY.sub("_", key), float(value), int(t * 1000), step)
            for step, values, t in rows
            for key, value in values.items()
            if value is not None and not math.isnan(float(value))
        ]
        for i in range(0, len(metrics), MAX_METRICS):
            self.client.log_batch(self.run_id, metrics=metrics[i : i + MAX_METRICS])

    def log_files(self, files: list[tuple[Path, str]]) -> None:
        assert self.run_id is not None
        for path, folder in files:
            self.client.log_artifact(self.run_id, str(path), folder or None)

    def finish(self, outcome: str) -> None:
        assert self.run_id is not None
        self.client.set_terminated(self.run_id, STATUS.get(outcome, "FAILED"))


def check_uri(uri: str) -> None:
    """A URI MLflow would misread (no scheme: a local folder; a typo: an unknown store) is refused by name."""
    scheme = urlparse(uri).scheme
    if scheme.split("+")[0] in SCHEMES or (scheme == "" and "://" not in uri and ":" not in uri):
        return
    guess = f"http://{uri}" if scheme and "://" not in uri else uri.replace(f"{scheme}://", "http://", 1)
    raise UserError(
        f"logger.mlflow.tracking_uri={uri}: {scheme!r} is not a tracking URI scheme MLflow knows "
        f"({', '.join(SCHEMES)}); for a tracking server pass its address, e.g. logger.mlflow.tracking_uri={guess}"
    )


def _clean(mapping: dict[str, str]) -> dict[str, str]:
    return {_KEY.sub("_", k)[:250]: v for k, v in mapping.items()}


def _first_line(error: BaseException) -> str:
    text = getattr(error, "message", None) or str(error)
    return text.strip().splitlines()[0] if text.strip() else type(error).__name__
