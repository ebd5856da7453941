"""What a gpu worker does for training: inspect a base model, train, merge, quantise.

Each piece of ML work runs in a child process (`python -m workers.engine ...`, or torchrun over
several GPUs), so a crash, a leak or a stuck CUDA context in training never takes the Celery worker
down, and the worker never imports torch. The worker supervises the child: it reads the child's
JSON lines from stdout, turns each logged step into a `TrainingMetric` row (an upsert on
(run, step), conditional on the run's claim), heart-beats with progress, and on `cancelling`
creates the stop file so the child checkpoints and exits.

Two trainers never write the same run folder:
- the child asks the kernel for SIGTERM when its parent dies (PR_SET_PDEATHSIG), which the CLI
  turns into "checkpoint and exit";
- the worker holds an exclusive flock on `<run>/.lock` before it starts a child and passes the
  descriptor on, so the lock lives as long as any trainer of the run does. A worker that takes
  over a run whose previous worker was SIGKILLed waits for that lock (the orphan saves its
  checkpoint and exits) before it resumes.
"""

from __future__ import annotations

import contextlib
import ctypes
import fcntl
import json
import logging
import os
import queue
import signal
import subprocess
import sys
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from celery.exceptions import SoftTimeLimitExceeded
from django.conf import settings
from django.db import transaction
from django.utils import timezone

from distillapp.core.paths import ModelPathRefused, check_model_path
from distillapp.core.runs.models import RunStatus
from distillapp.core.runs.services import (
    ClaimLost,
    ClaimState,
    run_claim,
    run_claimed,
    run_end,
    run_fail,
    run_heartbeat,
    run_resume,
)
from distillapp.generation.models import Teacher, TeacherKind
from distillapp.training import artifacts
from distillapp.training.models import (
    BaseModel,
    BaseModelSource,
    Method,
    QuantizationRun,
    TrainingArtifact,
    TrainingMetric,
    TrainingRun,
)
from distillapp.training.services import hf_cache_dir, run_folder

logger = logging.getLogger(__name__)

HEARTBEAT_SECONDS = 2.0
LOCK_WAIT_SECONDS = 300.0
LOG_LINES = 200
STOP_FILE = "STOP"
LOCK_FILE = ".lock"
_PR_SET_PDEATHSIG = 1
_METRIC_FIELDS = {
    "loss": "train_loss",
    "eval_loss": "eval_loss",
    "learning_rate": "learning_rate",
    "grad_norm": "grad_norm",
    "tokens_per_s": "tokens_per_s",
    "epoch": "epoch",
}


def _die_with_parent(parent_pid: int) -> Callable[[], None]:
    """preexec_fn: SIGTERM this child when the worker dies (Linux), and exit at once if it
    already died between fork and here."""

    def preexec() -> None:
        with contextlib.suppress(OSError, AttributeError):
            ctypes.CDLL("libc.so.6", use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)
        if os.getppid() != parent_pid:
            os._exit(1)

    return preexec


def _child_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    env = dict(os.environ)
    env.update(
        PYTHONUNBUFFERED="1",
        TOKENIZERS_PARALLELISM="false",
        HF_HUB_OFFLINE="1",
        HF_HUB_DISABLE_PROGRESS_BARS="1",
        TRANSFORMERS_NO_ADVISORY_WARNINGS="1",
    )
    env.update(extra or {})
    return env


class Child:
    """A supervised child process: its output lines arrive through a queue (read by a thread),
    so the worker can heart-beat while the child is silent."""

    def __init__(
        self,
        cmd: list[str],
        *,
        pass_fds: tuple[int, ...] = (),
        env: dict[str, str] | None = None,
    ) -> None:
        self.cmd = cmd
        self.proc = subprocess.Popen(
            cmd,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            cwd=str(settings.BASE_DIR),
            env=_child_env(env),
            pass_fds=pass_fds,
            preexec_fn=_die_with_parent(os.getpid()),  # noqa: PLW1509 - prctl needs it
        )
        self.lines: queue.Queue[str | None] = queue.Queue()
        self.tail: deque[str] = deque(maxlen=LOG_LINES)
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for raw in self.proc.stdout:
            self.lines.put(raw.decode("utf-8", "replace").rstrip("\n").rstrip("\r"))
        self.lines.put(None)

    def events(self, every: float = HEARTBEAT_SECONDS) -> Iterator[str | None]:
        """Lines as they come; None at least every `every` seconds (time to heart-beat). Ends
        when the child closed its output and exited."""
        last = time.monotonic()
        while True:
            try:
                line = self.lines.get(timeout=every)
            except queue.Empty:
                last = time.monotonic()
                yield None
                continue
            if line is None:
                self.proc.wait()
                return
            self.tail.append(line)
            yield line
            if time.monotonic() - last >= every:
                last = time.monotonic()
                yield None

    def stop(self, timeout: float = 120.0) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()

    def error_line(self) -> str:
        """The CLI's `error: ...` sentence (input errors exit 2), without the prefix."""
        for line in reversed(self.tail):
            if line.startswith("error: "):
                return line[len("error: ") :]
        return ""


def _json(line: str) -> dict[str, Any] | None:
    if not line.startswith("{"):
        return None
    try:
        value = json.loads(line)
    except json.JSONDecodeError:
        return None
    return value if isinstance(value, dict) else None


def _python() -> list[str]:
    return [sys.executable, "-m", "workers.engine"]


def _exit_text(code: int) -> str:
    if code < 0:
        with contextlib.suppress(ValueError):
            return f"was killed by {signal.Signals(-code).name}"
    return f"exited with status {code}"


# --- base model inspection -------------------------------------------------------------------


def base_model_inspect_execute(*, base_model_id: int) -> BaseModel | None:
    """Inspect a base model in a child process. Idempotent: one claim inspects; a second
    delivery does nothing; a bad folder ends failed with the engine's exact sentence."""
    return run_claimed(BaseModel, pk=base_model_id, work=_inspect, what="base model inspection")


def _inspect(model: BaseModel, token: str) -> None:
    org_id = model.project.org_id
    if model.source == BaseModelSource.PATH:
        try:
            folder = str(check_model_path(model.path, org_id=org_id))
        except ModelPathRefused as exc:
            run_end(BaseModel, pk=model.pk, token=token, status=RunStatus.FAILED, message=str(exc))
            return
        cmd = [*_python(), "inspect", "--model", folder]
    else:
        cache = hf_cache_dir()
        cache.mkdir(parents=True, exist_ok=True)
        cmd = [*_python(), "inspect", "--hub-id", model.hub_id, "--cache-dir", str(cache)]
    for teacher in Teacher.objects.filter(project_id=model.project_id, kind=TeacherKind.HF_LOCAL):
        try:
            path = check_model_path(teacher.model_path, org_id=org_id)
        except ModelPathRefused:
            continue
        cmd += ["--teacher", f"{teacher.pk}={path}"]
    run_heartbeat(BaseModel, pk=model.pk, token=token, message="Inspecting…")
    child = Child(cmd)
    report: dict[str, Any] | None = None
    for line in child.events():
        if line is None:
            run_heartbeat(BaseModel, pk=model.pk, token=token)
            continue
        payload = _json(line)
        if payload and "result" in payload:
            report = payload["result"]
    code = child.proc.returncode
    if code == 0 and report is not None:
        run_end(
            BaseModel,
            pk=model.pk,
            token=token,
            status=RunStatus.SUCCEEDED,
            message="Inspected.",
            inspection=report,
            resolved_path=str(report.get("folder") or ""),
        )
        return
    message = child.error_line() or f"The inspection process {_exit_text(code)}."
    run_end(BaseModel, pk=model.pk, token=token, status=RunStatus.FAILED, message=message)


# --- training --------------------------------------------------------------------------------


def gpu_count() -> int:
    """Processes to train with on this host: the setting, else the GPUs it sees (at least 1)."""
    configured = int(getattr(settings, "TRAINING_PROCESSES", 0) or 0)
    if configured > 0:
        return configured
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if visible is not None:
        return max(1, len([d for d in visible.split(",") if d.strip() and d.strip() != "-1"]))
    try:
        out = subprocess.run(
            ["nvidia-smi", "-L"], capture_output=True, text=True, timeout=20, check=False
        ).stdout
    except (OSError, subprocess.SubprocessError):
        return 1
    return max(1, sum(1 for line in out.splitlines() if line.startswith("GPU ")))


def _data_files(run: TrainingRun) -> tuple[Path, Path | None]:
    version = run.dataset_version
    folder = Path(settings.MEDIA_ROOT) / version.path
    suffix = "_kd" if run.method == Method.KD else ""
    data = folder / f"train{suffix}.jsonl"
    eval_file = folder / f"validation{suffix}.jsonl"
    has_eval = eval_file.is_file() and eval_file.stat().st_size > 0
    return data, eval_file if has_eval else None


def train_command(run: TrainingRun, *, processes: int) -> list[str]:
    """The child's command line: every TrainConfig setting of the run as a CLI flag."""
    c = run.config
    data, eval_file = _data_files(run)
    folder = run_folder(run)
    args = [
        "train",
        "--data", str(data),
        "--base", run.base_model.resolved_path,
        "--method", run.method,
        "--out", str(folder),
        "--lora-r", str(c["lora_r"]),
        "--lora-alpha", str(c["lora_alpha"]),
        "--lora-dropout", str(c["lora_dropout"]),
        "--target-modules", str(c["target_modules"]),
        "--lr", str(c["learning_rate"]),
        "--lr-scheduler", str(c["lr_scheduler"]),
        "--weight-decay", str(c["weight_decay"]),
        "--epochs", str(c["epochs"]),
        "--max-steps", str(c["max_steps"]),
        "--batch-size", str(c["batch_size"]),
        "--grad-accum", str(c["grad_accum"]),
        "--max-length", str(c["max_length"]),
        "--temperature", str(c["temperature"]),
        "--alpha", str(c["alpha"]),
        "--warmup", str(c["warmup_steps"]),
        "--save-steps", str(c["save_steps"]),
        "--logging-steps", str(c["logging_steps"]),
        "--seed", str(c["seed"]),
        "--resume",
        "--stop-file", str(folder / STOP_FILE),
    ]  # fmt: skip
    if eval_file is not None:
        args += ["--eval-data", str(eval_file)]
        if c.get("eval_steps"):
            args += ["--eval-steps", str(c["eval_steps"])]
    if not c["lora"]:
        args.append("--full-finetune")
    if c["packing"]:
        args.append("--packing")
    if not c["group_by_length"]:
        args.append("--no-group-by-length")
    if c["strip_reasoning"]:
        args.append("--strip-reasoning")
    if c["gradient_checkpointing"]:
        args.append("--gradient-checkpointing")
    if run.method == Method.KD and run.teacher is not None:
        args += ["--teacher-tokenizer", run.teacher.model_path]
    if processes > 1:
        return [
            sys.executable, "-m", "torch.distributed.run", "--standalone",
            "--nproc-per-node", str(processes), "-m", "workers.engine", *args,
        ]  # fmt: skip
    return [*_python(), *args]


@contextlib.contextmanager
def _run_lock(folder: Path, beat: Callable[[], None]) -> Iterator[int]:
    """Hold `<folder>/.lock` exclusively; waits (heart-beating) while an orphaned trainer of the
    run still holds it. Yields the descriptor so the child inherits the lock."""
    folder.mkdir(parents=True, exist_ok=True)
    fd = os.open(folder / LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        deadline = time.monotonic() + LOCK_WAIT_SECONDS
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() > deadline:
                    raise RuntimeError(
                        "another trainer still holds this run's folder; resume it later"
                    ) from None
                beat()
                time.sleep(0.5)
        yield fd
    finally:
        os.close(fd)


def _last_checkpoint_step(folder: Path) -> int:
    steps = []
    for entry in (folder / "checkpoints").glob("checkpoint-*"):
        with contextlib.suppress(ValueError):
            steps.append(int(entry.name.rsplit("-", 1)[1]))
    return max(steps, default=0)


def _metric_values(row: dict[str, Any]) -> dict[str, Any]:
    return {
        field: float(row[key])
        for key, field in _METRIC_FIELDS.items()
        if row.get(key) is not None and isinstance(row[key], int | float)
    }


def _upsert_metric(run_id: int, step: int, values: dict[str, Any]) -> None:
    """Insert or update the row of a step, keeping what an earlier log of the step wrote (a
    train row and an eval row can share a step)."""
    updated = TrainingMetric.objects.filter(run_id=run_id, step=step).update(
        **values, created_at=timezone.now()
    )
    if not updated:
        TrainingMetric.objects.create(run_id=run_id, step=step, **values)


def _sync_from_files(run: TrainingRun, folder: Path) -> int:
    """Before a (re)start: the checkpoint the child resumes from decides the curve. Rows past it
    are removed (the child logs those steps again); rows up to it that a killed worker never
    stored are read from metrics.jsonl. Returns the checkpoint's step (0: from scratch)."""
    step = _last_checkpoint_step(folder)
    TrainingMetric.objects.filter(run=run, step__gt=step).delete()
    path = folder / "metrics.jsonl"
    if step and path.is_file():
        with path.open(encoding="utf-8") as fh:
            for line in fh:
                row = _json(line.strip())
                if row and isinstance(row.get("step"), int) and 0 < row["step"] <= step:
                    values = _metric_values(row)
                    if values:
                        _upsert_metric(run.pk, row["step"], values)
    return step


def training_run_execute(*, run_id: int) -> TrainingRun | None:
    """Train (or resume) a run in a child process. Idempotent: one claim trains; a taken-over
    run continues from its latest checkpoint and never writes a step twice."""
    claim = run_claim(TrainingRun, pk=run_id)
    if claim.state != ClaimState.CLAIMED:
        return claim.run
    run, token = claim.run, claim.token
    assert run is not None
    try:
        _train(run, token)
    except ClaimLost:
        logger.info("training run %s: claim lost; another worker owns it", run_id)
    except SoftTimeLimitExceeded:
        # The task's time limit: the child has checkpointed (see _train); queue the rest.
        run_fail(TrainingRun, pk=run.pk, token=token, message="Task time limit; resuming.")
        run.refresh_from_db()
        run_resume(run)
    except Exception as exc:
        logger.exception("training run %s crashed", run_id)
        run_fail(TrainingRun, pk=run.pk, token=token, message=f"The worker failed: {exc}")
    run.refresh_from_db()
    return run


class _Supervisor:
    """Heart-beats a training run and stores what its child reports."""

    def __init__(self, run: TrainingRun, token: str, processes: int) -> None:
        self.run = run
        self.token = token
        self.processes = processes
        self.progress: dict[str, Any] = {"processes": processes}
        self.step = run.done
        self.total = run.total
        self.tail: deque[str] = deque(run.log_tail.splitlines()[-LOG_LINES:], maxlen=LOG_LINES)
        self.stop_requested = False
        self.last_beat = 0.0

    def beat(self, **extra: Any) -> str:
        status = run_heartbeat(
            TrainingRun,
            pk=self.run.pk,
            token=self.token,
            done=self.step,
            total=self.total,
            metrics=self.progress,
            log_tail="\n".join(self.tail),
            **extra,
        )
        self.last_beat = time.monotonic()
        return status

    def on_row(self, row: dict[str, Any]) -> None:
        step = int(row["step"])
        self.step = step
        self.total = int(row.get("total_steps") or self.total)
        for key in ("tokens_per_s", "eta_s", "device", "peak_memory_mb"):
            if row.get(key) is not None:
                self.progress[key] = row[key]
        values = _metric_values(row)
        with transaction.atomic():
            # Conditional on the claim, like every write of a run: a worker that lost the run
            # rolls back instead of writing a row.
            if not TrainingRun.objects.filter(pk=self.run.pk, claim_token=self.token).update(
                done=self.step, total=self.total, heartbeat_at=timezone.now()
            ):
                raise ClaimLost(self.run.pk)
            if values:
                _upsert_metric(self.run.pk, step, values)


def _train(run: TrainingRun, token: str) -> None:
    folder = run_folder(run)
    processes = gpu_count()
    sup = _Supervisor(run, token, processes)
    sup.beat(message="Waiting for the run's folder lock…")
    with _run_lock(folder, lambda: None if sup.beat() else None) as lock_fd:
        with contextlib.suppress(FileNotFoundError):
            (folder / STOP_FILE).unlink()
        resumed_from = _sync_from_files(run, folder)
        sup.step = resumed_from or 0
        sup.tail.append(
            f"--- {timezone.now():%Y-%m-%d %H:%M:%S} "
            + (f"resuming from step {resumed_from}" if resumed_from else "starting")
            + f" with {processes} process(es) ---"
        )
        sup.beat(message=f"Training ({processes} process(es)).")
        child = Child(train_command(run, processes=processes), pass_fds=(lock_fd,))
        result = _supervise_training(sup, child)
        code = child.proc.returncode
        if code == 0 and result is not None and result.get("status") == "completed":
            _finish(run, sup, result)
            return
        if code == 0 and result is not None and result.get("status") == "cancelled":
            sup.beat()
            run_end(
                TrainingRun,
                pk=run.pk,
                token=token,
                status=RunStatus.CANCELLED,
                message=f"Stopped at step {result.get('global_step')}; resuming continues "
                "from that checkpoint.",
                result=result,
            )
            return
        detail = child.error_line()
        message = (
            detail
            if code == 2 and detail
            else f"The training process {_exit_text(code)}; see the log. Resuming continues "
            "from the latest checkpoint."
        )
        sup.beat()
        run_end(TrainingRun, pk=run.pk, token=token, status=RunStatus.FAILED, message=message)


def _supervise_training(sup: _Supervisor, child: Child) -> dict[str, Any] | None:
    result: dict[str, Any] | None = None
    folder = run_folder(sup.run)
    try:
        for line in child.events():
            if line is not None:
                payload = _json(line)
                if payload is not None and "result" in payload:
                    result = payload["result"]
                elif payload is not None and isinstance(payload.get("step"), int):
                    sup.on_row(payload)
                elif not line.startswith("{'"):
                    # Rows (and the Trainer's own printed dict of each) live in TrainingMetric;
                    # the tail keeps what people need to read: warnings, errors, tracebacks.
                    sup.tail.append(line)
            if time.monotonic() - sup.last_beat >= HEARTBEAT_SECONDS:
                status = sup.beat()
                if status == RunStatus.CANCELLING and not sup.stop_requested:
                    sup.stop_requested = True
                    (folder / STOP_FILE).touch()
                    sup.tail.append("--- stop requested: checkpointing ---")
    except (ClaimLost, SoftTimeLimitExceeded):
        (folder / STOP_FILE).touch()
        child.stop()
        raise
    return result


def _finish(run: TrainingRun, sup: _Supervisor, result: dict[str, Any]) -> None:
    """Merge (a second child), write the model card, record the artefacts, end succeeded."""
    folder = run_folder(run)
    sup.progress.pop("eta_s", None)
    adapter = run.config.get("lora", True)
    if adapter:
        sup.beat(message="Merging the adapter into the base model (full precision)…")
        merged = folder / "merged"
        child = Child([*_python(), "merge", "--adapter", str(folder), "--out", str(merged)])
        for line in child.events():
            if line is None:
                sup.beat()
        if child.proc.returncode != 0:
            sup.tail.extend(child.tail)
            sup.beat()
            run_end(
                TrainingRun,
                pk=run.pk,
                token=sup.token,
                status=RunStatus.FAILED,
                message=f"Training finished but merging {_exit_text(child.proc.returncode)}: "
                + (child.error_line() or "see the log."),
                result=result,
            )
            return
    sup.beat(message="Writing the model card…")
    card = artifacts.model_card(run=run, result=result)
    (folder / "README.md").write_text(card, encoding="utf-8")
    (folder / "training_config.json").write_text(
        json.dumps({"method": run.method, **run.config}, indent=2), encoding="utf-8"
    )
    sup.beat()
    with transaction.atomic():
        if not TrainingRun.objects.filter(pk=run.pk, claim_token=sup.token).exists():
            raise ClaimLost(run.pk)
        rel = Path(run.out_dir)
        names = [("adapter" if adapter else "model", rel)]
        if adapter:
            (folder / "merged" / "README.md").write_text(card, encoding="utf-8")
            names.append(("merged", rel / "merged"))
        for name, path in names:
            TrainingArtifact.objects.update_or_create(
                run=run,
                name=name,
                defaults={
                    "path": str(path),
                    "size_bytes": artifacts.artifact_size(
                        name=name, folder=Path(settings.MEDIA_ROOT) / path
                    ),
                    "metrics": {
                        "train_loss": result.get("train_loss"),
                        "eval_loss": result.get("eval_loss"),
                    },
                },
            )
        run_end(
            TrainingRun,
            pk=run.pk,
            token=sup.token,
            status=RunStatus.SUCCEEDED,
            message=f"Trained {result.get('global_step')} steps.",
            result=result,
            done=int(result.get("global_step") or sup.step),
            metrics=sup.progress,
            log_tail="\n".join(sup.tail),
        )


# --- quantisation ----------------------------------------------------------------------------


def quantization_execute(*, quantization_id: int) -> QuantizationRun | None:
    """Quantise a run's merged model in a child process. Idempotent by its claim; the artefact
    row is an upsert on (run, name)."""
    return run_claimed(QuantizationRun, pk=quantization_id, work=_quantize, what="quantization")


def _quantize(q: QuantizationRun, token: str) -> None:
    run = q.training_run
    source = TrainingArtifact.objects.filter(run=run, name__in=("merged", "model")).first()
    if source is None:
        run_end(QuantizationRun, pk=q.pk, token=token, status=RunStatus.FAILED,
                message="The run has no merged model.")  # fmt: skip
        return
    media = Path(settings.MEDIA_ROOT)
    name = f"quantized-{q.scheme}"
    out_rel = Path(run.out_dir) / name
    cmd = [*_python(), "quantize", "--model", str(media / source.path), "--out", str(media / out_rel),
           "--scheme", q.scheme, "--max-length", str(run.config.get("max_length", 1024))]  # fmt: skip
    eval_file = media / run.dataset_version.path / "validation.jsonl"
    if eval_file.is_file() and eval_file.stat().st_size > 0:
        cmd += ["--eval-data", str(eval_file)]
    run_heartbeat(QuantizationRun, pk=q.pk, token=token, message=f"Quantising ({q.scheme})…")
    child = Child(cmd)
    report: dict[str, Any] | None = None
    for line in child.events():
        if line is None:
            run_heartbeat(QuantizationRun, pk=q.pk, token=token)
            continue
        payload = _json(line)
        if payload and "result" in payload:
            report = payload["result"]
    if child.proc.returncode != 0 or report is None:
        message = (
            child.error_line() or f"The quantisation process {_exit_text(child.proc.returncode)}."
        )
        run_end(QuantizationRun, pk=q.pk, token=token, status=RunStatus.FAILED, message=message)
        return
    with transaction.atomic():
        if not QuantizationRun.objects.filter(pk=q.pk, claim_token=token).exists():
            raise ClaimLost(q.pk)
        TrainingArtifact.objects.update_or_create(
            run=run,
            name=name,
            defaults={"path": str(out_rel), "size_bytes": int(report.get("size_bytes") or 0),
                      "metrics": report},
        )  # fmt: skip
        if report.get("source_eval_loss") is not None:
            source.metrics = {**source.metrics, "validation_loss": report["source_eval_loss"]}
            source.save(update_fields=["metrics"])
        run_end(QuantizationRun, pk=q.pk, token=token, status=RunStatus.SUCCEEDED,
                message="Quantised.", metrics=report)  # fmt: skip
