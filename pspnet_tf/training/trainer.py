"""The training run: data, model, optimizer, checkpoints and Keras `fit`, resumable."""

import contextlib
import logging as python_logging
import os
from collections.abc import Iterator

import keras
import tensorflow as tf
from absl import logging

from pspnet_tf.config import ExperimentConfig, prepare_run_dir
from pspnet_tf.convert.pretrained import apply_pretrained
from pspnet_tf.data.datasets import SegmentationDataset, get_dataset
from pspnet_tf.data.demo import ensure_demo_dataset
from pspnet_tf.data.pipeline import build_train_dataset, steps_per_epoch
from pspnet_tf.data.tfrecord import ShardedDataset
from pspnet_tf.errors import UserError
from pspnet_tf.inference.artifacts import save_final_model
from pspnet_tf.models import build_pspnet, save_weights
from pspnet_tf.models.convolution import use_tap_gradients
from pspnet_tf.training.callbacks import (CheckpointCallback, LearningRateLogger,
                                          ValidationCallback, write_json)
from pspnet_tf.training.checkpoints import CheckpointKeeper
from pspnet_tf.training.losses import SegmentationCrossEntropy
from pspnet_tf.training.metrics import format_table
from pspnet_tf.training.schedules import make_optimizer
from pspnet_tf.training.strategy import (all_workers_ok, create_strategy, is_chief,
                                         num_workers, split_global_batch, task_name)

FINAL_WEIGHTS = "final_weights.h5"
FINAL_MODEL = "final_model.keras"  # the inference model with its classes and scale (chief)
METRICS_FILE = "metrics.json"
WORKERS_DIR = "workers"  # run_dir/workers/TASK/: a non-chief worker's train.log and final weights


def load_split(config: ExperimentConfig, split: str) -> SegmentationDataset:
    """Opens one split of the configured dataset and checks its class count."""
    if config.tfrecord_dir:
        dataset = ShardedDataset(config.tfrecord_dir, split, config.dataset)
    else:
        if config.dataset == "demo":
            ensure_demo_dataset(config.data_root)
        dataset = get_dataset(config.dataset, config.data_root, split)
    if dataset.num_classes != config.num_classes:
        raise UserError(f"--num_classes={config.num_classes} but dataset {config.dataset} has "
                        f"{dataset.num_classes} classes; set --num_classes={dataset.num_classes}")
    return dataset


def build_model(config: ExperimentConfig, training_heads: bool) -> keras.Model:
    """The PSPNet that `config` describes, in its dtype policy (Keras keeps it global)."""
    keras.mixed_precision.set_global_policy(config.mixed_precision)
    return build_pspnet(config.num_classes, backbone=config.backbone,
                        output_stride=config.output_stride, aux_channels=config.aux_channels,
                        dropout=config.dropout, training_heads=training_heads,
                        psp_channels=config.psp_channels)


class _RunLogHandler(python_logging.FileHandler):
    """Writes run_dir/train.log; one at a time, so a later run in the same process does not
    also write into an earlier run's log."""


def _log_to_file(path: str) -> None:
    root = python_logging.getLogger()
    for previous in [h for h in root.handlers if isinstance(h, _RunLogHandler)]:
        root.removeHandler(previous)
        previous.close()
    handler = _RunLogHandler(path)
    handler.setFormatter(python_logging.Formatter("%(asctime)s %(levelname)s %(message)s"))
    root.addHandler(handler)
    logging.set_verbosity(logging.INFO)


def compile_for_training(model: keras.Model, config: ExperimentConfig,
                         total_steps: int) -> None:
    """SGD + poly schedule, main and 0.4-weighted aux losses, optional XLA; slots built now
    so that a checkpoint restores into them. The stride-1 convolutions get the faster CPU
    training gradient (`use_tap_gradients`); the model stays a plain, savable PSPNet."""
    use_tap_gradients(model)
    optimizer = make_optimizer(config.learning_rate, total_steps, momentum=config.momentum,
                               weight_decay=config.weight_decay, end_lr=config.end_learning_rate)
    model.compile(
        optimizer=optimizer,
        loss={"logits": SegmentationCrossEntropy(), "aux_logits": SegmentationCrossEntropy()},
        loss_weights={"logits": 1.0, "aux_logits": config.aux_loss_weight},
        jit_compile=config.jit_compile,
    )
    model.optimizer.build(model.trainable_variables)  # a LossScaleOptimizer under float16


def _check_shared_run_dir(config: ExperimentConfig) -> bool:
    """A non-chief worker's read-only check of the run directory the chief prepared."""
    if not os.path.exists(os.path.join(config.run_dir, "config.json")):
        raise UserError(f"--run_dir={config.run_dir} holds no config.json on this worker, but "
                        "the chief wrote one there; give every worker the same --run_dir on a "
                        "filesystem they all share")
    return prepare_run_dir(config)


def _open_run_dir(config: ExperimentConfig, strategy: tf.distribute.Strategy,
                  chief: bool) -> bool:
    """prepare_run_dir on the chief, then the same check on the other workers; True = resume.

    All workers share run_dir (they resume from the chief's checkpoints). A worker that
    fails tells the others, so that each exits with the error instead of waiting forever.
    """
    resuming, error = False, None
    for chiefs_turn in (True, False):
        if chief is chiefs_turn:
            try:
                resuming = prepare_run_dir(config) if chief else _check_shared_run_dir(config)
            except UserError as failure:
                error = failure
        if not all_workers_ok(strategy, error is None):
            raise error or UserError(f"another worker could not use --run_dir={config.run_dir}"
                                     "; its log names the problem")
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


def train(config: ExperimentConfig) -> dict:
    """Trains (or resumes) the run in `config.run_dir` and returns the final val metrics.

    Progress survives a kill at any moment: the step counter, optimizer slots and
    schedule are in each checkpoint, and the data order is a pure function of the seed
    and the step, so a resumed run sees the batches an uninterrupted one would have.
    """
    # Check the data before the run directory is created, so a fixed command can rerun.
    train_set = load_split(config, config.train_split)
    val_set = load_split(config, config.val_split)
    strategy = create_strategy(config.strategy, config.tpu)
    chief = is_chief(strategy)
    split_global_batch(config.batch_size, strategy)
    steps = steps_per_epoch(train_set, config.batch_size)
    total_steps = steps * config.epochs
    keras.utils.set_random_seed(config.seed)
    with strategy.scope():
        model = build_model(config, training_heads=True)
        # Before the run directory is created (a bad --pretrained leaves nothing behind)
        # and before the checkpoint restore (a resumed run keeps its trained weights).
        pretrained = apply_pretrained(model, config.pretrained) if config.pretrained else []
        compile_for_training(model, config, total_steps)
    resuming = _open_run_dir(config, strategy, chief)
    # Every worker trains and saves; only the chief writes into run_dir itself.
    task = task_name(strategy)
    output_dir = config.run_dir if chief else os.path.join(config.run_dir, WORKERS_DIR, task)
    os.makedirs(output_dir, exist_ok=True)
    _log_to_file(os.path.join(output_dir, "train.log"))
    role = ("resuming" if resuming else "new") if chief else f"{task} joins the"
    logging.info("%s run in %s: %d training images, %d steps per epoch, %d replicas", role,
                 config.run_dir, len(train_set.samples), steps, strategy.num_replicas_in_sync)
    if pretrained:
        logging.info("initialised %d layers from --pretrained=%s", len(pretrained),
                     config.pretrained)
    keeper = CheckpointKeeper(os.path.join(config.run_dir, "checkpoints"), model,
                              model.optimizer, is_chief=chief)
    start = keeper.restore_latest()

    tensorboard_dir = os.path.join(config.run_dir, "tensorboard")
    validation = ValidationCallback(val_set, config.scale, config.epochs,
                                    config.eval_every_epochs, tensorboard_dir if chief else None,
                                    config.num_image_summaries)
    callbacks = [CheckpointCallback(keeper, config.checkpoint_every_steps), LearningRateLogger(),
                 validation]
    if chief:
        callbacks += [
            keras.callbacks.CSVLogger(os.path.join(config.run_dir, "history.csv"), append=True),
            keras.callbacks.TensorBoard(tensorboard_dir),
        ]

    def fit(first: int, last: int, steps_in_epoch: int) -> None:
        data = build_train_dataset(
            train_set, crop_size=config.crop_size, scale=config.scale,
            global_batch_size=config.batch_size, epochs=config.epochs, seed=config.seed,
            start_step=first, end_step=last, ratio_range=config.ratio_range,
            cat_max_ratio=config.cat_max_ratio, skip_bad_samples=config.skip_bad_samples)
        model.fit(_with_aux_targets(data), epochs=last // steps, initial_epoch=first // steps,
                  steps_per_epoch=steps_in_epoch, callbacks=callbacks, shuffle=False, verbose=1)

    with _lost_workers_reported(strategy, config.run_dir):
        if start % steps:
            # Killed mid-epoch: finish that epoch's remaining steps first.
            epoch_end = (start // steps + 1) * steps
            fit(start, epoch_end, epoch_end - start)
            start = epoch_end
        if start < total_steps:
            fit(start, total_steps, steps)
        summary = validation.latest or validation.run(model)
    if chief:
        write_json(summary, os.path.join(config.run_dir, METRICS_FILE))
        save_final_model(model, config, val_set, os.path.join(config.run_dir, FINAL_MODEL))
    save_weights(model, os.path.join(output_dir, FINAL_WEIGHTS))
    print(format_table(summary))
    return summary
