"""The training run: data, model, optimizer, checkpoints and Keras `fit`, resumable."""

import contextlib
import logging as python_logging
import os
from collections.abc import Iterator

import keras
import tensorflow as tf
from absl import logging

from pspnet_tf.config import ExperimentConfig
from pspnet_tf.convert.pretrained import apply_pretrained
from pspnet_tf.data.datasets import SegmentationDataset
from pspnet_tf.data.pipeline import build_train_dataset, steps_per_epoch
from pspnet_tf.data.splits import load_split
from pspnet_tf.data.verification import check_training_masks
from pspnet_tf.errors import (ParameterError, RunInterrupted, UserError, environment_faults,
                              user_error_message)
from pspnet_tf.evaluation.report import write_report
from pspnet_tf.evaluation.tables import format_table, write_json
from pspnet_tf.inference.artifacts import save_final_model
from pspnet_tf.models import PSPNetSegmenter, save_weights
from pspnet_tf.models.factory import build_model
from pspnet_tf.models.losses import SegmentationCrossEntropy
from pspnet_tf.models.schedules import make_optimizer
from pspnet_tf.training.best import BEST_MODEL, BEST_WEIGHTS, BestModelKeeper, metric_key
from pspnet_tf.training.callbacks import CheckpointCallback, LearningRateLogger, ValidationCallback
from pspnet_tf.training.checkpoints import CheckpointKeeper
from pspnet_tf.training.class_weights import AUTO, resolve_class_weights, save_class_weights
from pspnet_tf.training.divergence import DivergenceGuard, check_finite_weights, likely_cause
from pspnet_tf.training.history import EpochHistory, EpochLosses
from pspnet_tf.training.memory_saving import training_choices
from pspnet_tf.training.preemption import stop_requests
from pspnet_tf.training.run_dir import CHECKPOINTS_DIR, CONFIG_FILE, prepare_run_dir
from pspnet_tf.training.run_lock import run_dir_lock
from pspnet_tf.training.strategy import (all_workers_ok, create_strategy, is_chief,
                                         num_workers, split_global_batch, task_name)

FINAL_WEIGHTS = "final_weights.h5"
FINAL_MODEL = "final_model.keras"  # the inference model with its classes and scale (chief)
METRICS_FILE = "metrics.json"
WORKERS_DIR = "workers"  # run_dir/workers/TASK/: a non-chief worker's train.log and final weights
# The losses Keras reports for the compiled model: the weighted total and each head's.
LOSS_KEYS = ("loss", "logits_loss", "aux_logits_loss")


class _RunLogHandler(python_logging.FileHandler):
    """Writes run_dir/train.log; one at a time, so a later run in the same process does not
    also write into an earlier run's log."""

    def handleError(self, record: python_logging.LogRecord) -> None:
        """Drops a line train.log cannot take (a full disk) instead of printing a traceback
        for each: the run's next write meets the same fault and stops it with one line."""


def _log_to_file(path: str) -> _RunLogHandler:
    root = python_logging.getLogger()
    for previous in [h for h in root.handlers if isinstance(h, _RunLogHandler)]:
        root.removeHandler(previous)
        previous.close()
    handler = _RunLogHandler(path)
    handler.setFormatter(python_logging.Formatter("%(asctime)s %(levelname)s %(message)s"))
    root.addHandler(handler)
    logging.set_verbosity(logging.INFO)
    return handler


@contextlib.contextmanager
def _run_end_logged(run_log: _RunLogHandler) -> Iterator[None]:
    """Writes why a run stopped into train.log only: the entry point prints the same line
    (an interrupt's, or `error: ...`) once on stderr, so it must not go to the console too.
    An unexpected exception (a bug) goes there with its traceback."""
    try:
        yield
    except BaseException as error:
        message = user_error_message(error)
        if isinstance(error, RunInterrupted):
            line, exc_info = str(error), None
        elif isinstance(error, KeyboardInterrupt):  # where no StopRequests was active
            line, exc_info = "interrupted", None
        elif message is not None:
            line, exc_info = f"error: {message}", None
        else:
            line, exc_info = f"stopped by {type(error).__name__}", (type(error), error,
                                                                     error.__traceback__)
        run_log.handle(python_logging.makeLogRecord(
            {"msg": line, "levelno": python_logging.ERROR, "levelname": "ERROR",
             "exc_info": exc_info}))
        raise


def build_training_model(config: ExperimentConfig) -> PSPNetSegmenter:
    """The PSPNet of `config` with the auxiliary head and the training choices
    (`--tap_gradients`, `--memory_saving`) resolved for this host."""
    choices = training_choices(config)
    return build_model(config, training_heads=True, tap_gradients=choices.tap_gradients,
                       recompute=choices.recompute)


def compile_for_training(model: keras.Model, config: ExperimentConfig, total_steps: int,
                         class_weights: list[float] | None = None) -> None:
    """SGD + poly schedule over `total_steps` optimizer steps, main and 0.4-weighted aux
    losses (both with `class_weights` and the config's OHEM), optional XLA, and the config's
    gradient accumulation (each batch fit gets is one optimizer step of that many
    micro-batches); slots built now so that a checkpoint restores into them."""
    settings = config.optimizer

    def loss() -> SegmentationCrossEntropy:
        return SegmentationCrossEntropy(class_weights=class_weights,
                                        ohem_threshold=settings.ohem_threshold,
                                        ohem_min_kept=settings.ohem_min_kept)

    optimizer = make_optimizer(settings.learning_rate, total_steps, momentum=settings.momentum,
                               weight_decay=settings.weight_decay,
                               end_lr=settings.end_learning_rate)
    model.compile(
        optimizer=optimizer,
        loss={"logits": loss(), "aux_logits": loss()},
        loss_weights={"logits": 1.0, "aux_logits": settings.aux_loss_weight},
        jit_compile=config.runtime.jit_compile,
        gradient_accumulation_steps=settings.gradient_accumulation_steps,
    )
    model.optimizer.build(model.trainable_variables)  # a LossScaleOptimizer under float16


def _check_shared_run_dir(config: ExperimentConfig) -> bool:
    """A non-chief worker's read-only check of the run directory the chief prepared."""
    run_dir = config.runtime.run_dir
    if not os.path.exists(os.path.join(run_dir, CONFIG_FILE)):
        raise ParameterError("{run_dir}={path} holds no {file} on this worker, but the chief "
                             "wrote one there; give every worker the same {run_dir} on a "
                             "filesystem they all share", path=run_dir, file=CONFIG_FILE)
    return prepare_run_dir(config)


def _open_run_dir(config: ExperimentConfig, strategy: tf.distribute.Strategy,
                  chief: bool, held_until_done: contextlib.ExitStack, force_unlock: bool) -> bool:
    """prepare_run_dir on the chief, then the same check on the other workers; True = resume.

    All workers share run_dir (they resume from the chief's checkpoints). A worker that
    fails tells the others, so that each exits with the error instead of waiting forever.
    The chief first takes run_dir's lock, held until `held_until_done` closes.
    """
    resuming, error, run_dir = False, None, config.runtime.run_dir
    for chiefs_turn in (True, False):
        if chief is chiefs_turn:
            try:
                if chief:  # before anything in run_dir is written
                    held_until_done.enter_context(run_dir_lock(run_dir, force_unlock))
                resuming = prepare_run_dir(config) if chief else _check_shared_run_dir(config)
            except UserError as failure:
                error = failure
        if not all_workers_ok(strategy, error is None):
            raise error or ParameterError("another worker could not use {run_dir}={path}; its "
                                          "log names the problem", path=run_dir)
    return resuming


def _with_aux_targets(dataset: tf.data.Dataset) -> tf.data.Dataset:
    return dataset.map(lambda image, label: (image, {"logits": label, "aux_logits": label}))


@contextlib.contextmanager
def _lost_workers_reported(strategy: tf.distribute.Strategy, run_dir: str) -> Iterator[None]:
    """Turns the collective-op error a worker gets when another worker dies into one line."""
    try:
        yield
    except tf.errors.UnavailableError as error:
        if num_workers(strategy) == 1:
            raise
        raise UserError(
            "lost contact with another worker (a collective op failed with UnavailableError; "
            f"TensorFlow's log above names the worker). Checkpoints in {run_dir} are kept: "
            "start every worker again with the same flags to resume") from error


def train(config: ExperimentConfig, force_unlock: bool = False) -> dict:
    """Trains (or resumes) the run in its --run_dir and returns the final val metrics.

    Progress survives a kill at any moment: the step counter, optimizer slots, schedule,
    dropout's random state and the epoch's loss sums are in each checkpoint, and the data
    order is a pure function of the seed and the step, so a resumed run sees the batches
    and dropout masks an uninterrupted one would have and ends with the same weights.
    SIGINT or SIGTERM (to any worker of a multi-worker run) stop it after the step in
    flight, checkpointed on every worker (RunInterrupted).
    The chief holds run_dir's lock (run_lock) throughout; `force_unlock` takes it from a
    holder this host cannot check. A non-finite loss or weights raise TrainingDiverged.
    """
    # environment_faults: a full disk, a read-only run_dir, ... raise an EnvironmentFault.
    with contextlib.ExitStack() as held_until_done, environment_faults():
        return _train(config, held_until_done, force_unlock)


def _train(config: ExperimentConfig, held_until_done: contextlib.ExitStack,
           force_unlock: bool) -> dict:
    # Check the data before the run directory is created, so a fixed command can rerun.
    train_set = load_split(config, config.data.train_split)
    val_set = load_split(config, config.data.val_split)
    metric_key(config.runtime.best_metric, val_set.class_names)  # UserError before run_dir
    for warning in check_training_masks(train_set):
        logging.warning("%s split %r: %s", config.data.dataset, train_set.split, warning)
    runtime, optimizer = config.runtime, config.optimizer
    strategy = create_strategy(runtime.strategy, runtime.tpu)
    chief = is_chief(strategy)
    split_global_batch(optimizer.batch_size, strategy)
    steps = steps_per_epoch(train_set, optimizer.step_batch_size)  # optimizer steps
    total_steps = steps * optimizer.epochs
    class_weights = resolve_class_weights(optimizer.class_weights, train_set, runtime.run_dir)
    keras.utils.set_random_seed(optimizer.seed)
    with strategy.scope():
        model = build_training_model(config)
        # Before the run directory is created (a bad --pretrained leaves nothing behind)
        # and before the checkpoint restore (a resumed run keeps its trained weights).
        pretrained = apply_pretrained(model, runtime.pretrained) if runtime.pretrained else []
        compile_for_training(model, config, total_steps, class_weights)
    resuming = _open_run_dir(config, strategy, chief, held_until_done, force_unlock)
    if chief and class_weights is not None and optimizer.class_weights == AUTO:
        save_class_weights(class_weights, train_set, runtime.run_dir)
    # Every worker trains and saves; only the chief writes into run_dir itself.
    task = task_name(strategy)
    output_dir = runtime.run_dir if chief else os.path.join(runtime.run_dir, WORKERS_DIR, task)
    os.makedirs(output_dir, exist_ok=True)
    run_log = _log_to_file(os.path.join(output_dir, "train.log"))
    with _run_end_logged(run_log):
        return _train_in_run_dir(config, model, strategy, train_set, val_set, steps,
                                 pretrained, resuming, output_dir)


def _best_model_keeper(config: ExperimentConfig, val_set: SegmentationDataset,
                       validation: ValidationCallback, chief: bool) -> BestModelKeeper:
    """best_model.keras and best_weights.h5 in run_dir by --best_metric (written by the
    chief), and early stopping (every worker stops at the same validation)."""
    runtime = config.runtime

    def save_best(model: keras.Model) -> None:
        save_final_model(model, config, val_set, os.path.join(runtime.run_dir, BEST_MODEL))
        save_weights(model, os.path.join(runtime.run_dir, BEST_WEIGHTS))

    return BestModelKeeper(runtime.run_dir, runtime.best_metric, val_set.class_names,
                           lambda: validation.latest, save_best if chief else None,
                           runtime.early_stop_patience, runtime.early_stop_min_delta)


def _train_in_run_dir(config: ExperimentConfig, model: keras.Model,
                      strategy: tf.distribute.Strategy, train_set: SegmentationDataset,
                      val_set: SegmentationDataset, steps: int, pretrained: list,
                      resuming: bool, output_dir: str) -> dict:
    """train() once run_dir and train.log are open: restore, fit, validate, save."""
    chief = is_chief(strategy)
    data, optimizer, runtime = config.data, config.optimizer, config.runtime
    total_steps = steps * optimizer.epochs
    role = ("resuming" if resuming else "new") if chief else f"{task_name(strategy)} joins the"
    logging.info("%s run in %s: %d training images, %d steps per epoch, %d replicas", role,
                 runtime.run_dir, len(train_set.samples), steps, strategy.num_replicas_in_sync)
    if optimizer.gradient_accumulation_steps > 1:
        logging.info("each step accumulates %d micro-batches of %d: %d images per step",
                     optimizer.gradient_accumulation_steps, optimizer.batch_size,
                     optimizer.step_batch_size)
    if pretrained:
        logging.info("initialised %d layers from --pretrained=%s", len(pretrained),
                     runtime.pretrained)
    logging.info("tap gradients %s (--tap_gradients=%s), early stages recomputed: %s "
                 "(--memory_saving=%s)", "on" if model.tap_gradients else "off",
                 runtime.tap_gradients, model.recompute or "none", runtime.memory_saving)
    cause = likely_cause(optimizer.learning_rate, runtime.mixed_precision)
    losses = EpochLosses(LOSS_KEYS, steps)
    keeper = CheckpointKeeper(os.path.join(runtime.run_dir, CHECKPOINTS_DIR), model,
                              model.optimizer, is_chief=chief, divergence_cause=cause,
                              extra=losses.checkpointed())
    start = keeper.restore_latest()

    # Saving is collective across workers: a signal to any one worker stops them all at
    # the same step (preemption.py).
    stop = stop_requests(strategy)
    tensorboard_dir = os.path.join(runtime.run_dir, "tensorboard")
    validation = ValidationCallback(val_set, data.scale, optimizer.epochs,
                                    runtime.eval_every_epochs, tensorboard_dir if chief else None,
                                    runtime.num_image_summaries, stop)
    # Order matters: a non-finite step is never checkpointed (the guard comes first); the
    # loss sums are updated before a checkpoint saves them; the history row is written after
    # the learning rate and validation joined the epoch logs.
    history = (EpochHistory(os.path.join(runtime.run_dir, "history.csv"), tensorboard_dir, losses)
               if chief else None)
    best = _best_model_keeper(config, val_set, validation, chief)
    epoch_end = [LearningRateLogger(), validation, best, *([history] if history else [])]
    callbacks = [DivergenceGuard(cause, optimizer.divergence_factor), losses,
                 CheckpointCallback(keeper, runtime.checkpoint_every_steps, stop), *epoch_end]

    def fit(first: int, last: int, steps_in_epoch: int) -> None:
        batches = build_train_dataset(
            train_set, crop_size=data.crop_size, scale=data.scale,
            global_batch_size=optimizer.step_batch_size, epochs=optimizer.epochs, seed=optimizer.seed,
            start_step=first, end_step=last, ratio_range=data.ratio_range,
            cat_max_ratio=data.cat_max_ratio, skip_bad_samples=data.skip_bad_samples)
        model.fit(_with_aux_targets(batches), epochs=last // steps, initial_epoch=first // steps,
                  steps_per_epoch=steps_in_epoch, callbacks=callbacks, shuffle=False, verbose=1)

    with _lost_workers_reported(strategy, runtime.run_dir), stop:
        if history and start % steps == 0 and start and not history.has(start // steps - 1):
            # Stopped after the epoch's last checkpoint but before its history row (e.g. a
            # signal during validation): finish that epoch's end now.
            logs: dict = {}  # shared: each callback adds to the row the last one writes
            for callback in epoch_end:
                callback.set_model(model)
                callback.on_epoch_end(start // steps - 1, logs)
        if start % steps:
            # Stopped mid-epoch: finish that epoch's remaining steps first.
            epoch_end_step = (start // steps + 1) * steps
            if not best.stopped_early:
                fit(start, epoch_end_step, epoch_end_step - start)
            start = epoch_end_step
        if start < total_steps and not best.stopped_early:
            fit(start, total_steps, steps)
        summary = validation.latest or validation.run(model)
        check_finite_weights(model.weights, keeper.step, cause)
        # A signal from here on is noted but lets the finished run write its results.
        if chief:
            write_json({**summary, "best": best.summary()},
                       os.path.join(runtime.run_dir, METRICS_FILE))
            write_report(summary, os.path.join(runtime.run_dir, "report"),
                         f"{runtime.run_dir}: last validation", exclusive=False)
            save_final_model(model, config, val_set, os.path.join(runtime.run_dir, FINAL_MODEL))
        save_weights(model, os.path.join(output_dir, FINAL_WEIGHTS))
    print(format_table(summary))
    if best.state["score"] is not None:
        print(f"best {best.state['metric']} {100.0 * best.state['score']:.2f} at epoch "
              f"{best.state['epoch']}: {os.path.join(runtime.run_dir, BEST_MODEL)}")
    return summary
