"""Training checkpoints that survive `kill -9`, damaged files and a damaged state file.

The checkpoints are found from their own files (`ckpt-N.index`, `ckpt-N.data-*`), never
from TensorFlow's `checkpoint` state file: that file can be garbled, empty, missing or
name a deleted checkpoint, and TensorFlow then either fails to start (`ValueError: Invalid
checkpoint state`) or silently starts from step 0 and writes over the existing files. The
newest checkpoint that reads completely wins; a damaged newer one is skipped with a
warning naming its files. The chief then rewrites the state file (atomically) from the
files found, so that new saves keep numbering and `max_to_keep` deletes the oldest.
"""

import os
import pathlib
import re
import shutil
import tempfile

import keras
import tensorflow as tf
from absl import logging

from pspnet_tf.atomic import write_atomically
from pspnet_tf.errors import ParameterError, UserError, describe_error, environment_faults
from pspnet_tf.training.divergence import check_finite_weights, first_non_finite

CHECKPOINT_NAME = "ckpt"
STATE_FILE = "checkpoint"  # TensorFlow's name for the state file
_CHECKPOINT_FILE = re.compile(rf"^{CHECKPOINT_NAME}-(\d+)\.(index|data-\d+-of-\d+)$")
# What a write killed half-way leaves: TensorFlow writes ckpt-N_temp/ and then renames its
# files, and writes the state file as checkpoint.tmp<uuid> before renaming it (this module's
# own rewrite of it as .checkpoint.tmp<random>).
_LEFTOVER = re.compile(rf"^({CHECKPOINT_NAME}-\d+_temp.*|\.?{STATE_FILE}\.tmp.*)$")


def checkpoint_files(directory: str) -> dict[int, list[str]]:
    """The checkpoint files in `directory` by step (whatever the state file says)."""
    found: dict[int, list[str]] = {}
    names = sorted(os.listdir(directory)) if os.path.isdir(directory) else []
    for name in names:
        match = _CHECKPOINT_FILE.match(name)
        if match:
            found.setdefault(int(match.group(1)), []).append(name)
    return found


def remove_leftovers(directory: str) -> None:
    """Deletes the temporary files and `ckpt-N_temp/` dirs of a write that was killed."""
    names = sorted(os.listdir(directory)) if os.path.isdir(directory) else []
    for name in names:
        if _LEFTOVER.match(name):
            path = os.path.join(directory, name)
            logging.warning("removing %s, left by a checkpoint write that was interrupted", path)
            if os.path.isdir(path):
                shutil.rmtree(path, ignore_errors=True)
            else:
                os.remove(path)


def write_state_file(directory: str, found: dict[int, list[str]]) -> None:
    """Writes TensorFlow's state file listing the checkpoints `found`, atomically.

    Each gets its files' time as its timestamp and the preserved-before time is earlier:
    CheckpointManager deletes only checkpoints newer than that (`max_to_keep`).
    """
    steps = sorted(found)
    times = [max(os.path.getmtime(os.path.join(directory, name)) for name in found[step])
             for step in steps]
    names = [f"{CHECKPOINT_NAME}-{step}" for step in steps]
    lines = [f'model_checkpoint_path: "{names[-1]}"']
    lines += [f'all_model_checkpoint_paths: "{name}"' for name in names]
    lines += [f"all_model_checkpoint_timestamps: {stamp!r}" for stamp in times]
    lines += [f"last_preserved_timestamp: {min(times) - 1.0!r}"]
    write_atomically(os.path.join(directory, STATE_FILE),
                     lambda target: pathlib.Path(target).write_text("\n".join(lines) + "\n"))


def random_states(model: keras.Model) -> list[tf.Variable]:
    """The states of the model's random generators (Keras SeedGenerators: dropout's).

    Keras lists them in `model.variables` but not in `model.weights`, so a checkpoint of the
    model alone restarts dropout's random stream at its initial state and a resumed run
    draws other dropout masks than an uninterrupted one (final weights differed by up to
    0.17 at the shipped dropout 0.1). Saved with every checkpoint, they make a resume exact
    after SIGINT, SIGTERM and kill -9 alike: they always match the checkpoint's step. (The
    alternative, a dropout drawn as a pure function of (seed, step), would need a custom
    layer in every model; this keeps Keras' own layer.) Nothing else random runs in a
    training step: keras.utils.set_random_seed only fixes the initial weights and these
    generators' first states, and the data pipeline draws from (seed, step) statelessly.
    """
    weights = {id(variable) for variable in model.weights}
    return [variable for variable in model.variables if id(variable) not in weights]


class CheckpointKeeper:
    """Saves and restores model, optimizer state, step counter and random states together,
    plus `extra` trackables (e.g. the running sums of the epoch's losses), finite only.

    A save of NaN or infinite values raises TrainingDiverged (naming `divergence_cause`)
    instead; a checkpoint holding them (as older versions wrote) is skipped on restore.
    """

    def __init__(self, directory: str, model: keras.Model, optimizer: keras.optimizers.Optimizer,
                 max_to_keep: int = 3, is_chief: bool = True,
                 divergence_cause: str = "lower --learning_rate",
                 extra: dict[str, tf.Variable] | None = None) -> None:
        # Every worker must take part in saving; only the chief's copy is kept. Every worker
        # restores from `directory`, so on several machines it must be a shared filesystem.
        self._scratch = None if is_chief else tempfile.mkdtemp(prefix="pspnet_ckpt_")
        states = {"random_states": random_states(model), **(extra or {})}
        self._checkpoint = tf.train.Checkpoint(model=model, optimizer=optimizer, **states)
        # Checkpoints of pspnet_tf before 0.1 hold only the model and the optimizer.
        self._weights_only = tf.train.Checkpoint(model=model, optimizer=optimizer)
        self._state_names = {name for name, value in states.items()
                             if not isinstance(value, list) or value}
        self._variables = [*model.weights, *optimizer.variables]
        self._optimizer = optimizer
        self._max_to_keep = max_to_keep
        self._divergence_cause = divergence_cause
        self._manager: tf.train.CheckpointManager | None = None
        self.directory = directory

    @property
    def step(self) -> int:
        return int(self._optimizer.iterations.numpy())

    def save(self) -> str:
        """Writes a checkpoint named after the current step (once per step)."""
        check_finite_weights(self._variables, self.step, self._divergence_cause)
        with environment_faults(self._scratch or self.directory):  # full disk, read-only, ...
            path = self._open_manager().save(checkpoint_number=self.step)
        if self._scratch:
            shutil.rmtree(self._scratch, ignore_errors=True)
        return path

    def _open_manager(self) -> tf.train.CheckpointManager:
        # Made after restore_latest has put the state file in order: the manager reads it.
        if self._manager is None:
            self._manager = tf.train.CheckpointManager(
                self._checkpoint, self._scratch or self.directory, max_to_keep=self._max_to_keep,
                checkpoint_name=CHECKPOINT_NAME)
        return self._manager

    def restore_latest(self) -> int:
        """Restores the newest readable checkpoint in `directory` (the chief's, also on the
        other workers); returns its step (0 when there is none).

        Raises UserError, touching nothing, when checkpoints exist but none is readable:
        starting from step 0 would write over them.
        """
        if not self._scratch:
            remove_leftovers(self.directory)
        found = checkpoint_files(self.directory)
        for step in sorted(found, reverse=True):
            if self._read(step, found[step]):
                if not self._scratch:
                    write_state_file(self.directory,
                                     {s: names for s, names in found.items() if s <= step})
                return self.step
        if found:
            raise ParameterError(
                "none of the {count} checkpoints in {directory} is readable (see the warnings "
                "above); move the damaged files away to resume from an older one, or pass a new "
                "{run_dir} to start afresh (nothing was changed)", count=len(found),
                directory=self.directory)
        state = os.path.join(self.directory, STATE_FILE)
        if not self._scratch and os.path.exists(state):
            logging.warning("removing %s: it lists checkpoints that no longer exist", state)
            os.remove(state)
        return 0

    def _read(self, step: int, names: list[str]) -> bool:
        """Restores ckpt-`step`; False (with a warning naming its files) when it is damaged."""
        prefix = os.path.join(self.directory, f"{CHECKPOINT_NAME}-{step}")
        try:
            saved = {name.split("/")[0] for name, _ in tf.train.list_variables(prefix)}
            older = not self._state_names <= saved
            reader = self._weights_only if older else self._checkpoint
            reader.read(prefix).assert_existing_objects_matched()
        # Damaged files raise many types: DataLossError, NotFoundError (OpErrors), ValueError,
        # IndexError ("Read less bytes than requested"), AssertionError, protobuf's DecodeError.
        except Exception as error:  # noqa: BLE001 - every way a damaged file fails to read
            logging.warning("skipping unreadable checkpoint %s (%s: %s); trying an older one",
                            prefix, ", ".join(names), describe_error(error))
            return False
        non_finite = first_non_finite(self._variables)
        if non_finite:
            logging.warning("skipping checkpoint %s: its %s holds NaN or infinite values "
                            "(the run had diverged); trying an older one", prefix, non_finite)
            return False
        if older:
            logging.warning(
                "checkpoint %s holds no %s (an older pspnet_tf wrote it): resuming with their "
                "current values, so dropout draws other masks and this epoch's logged loss "
                "covers the resumed steps only", prefix, " or ".join(
                    sorted(self._state_names - saved)))
        logging.info("resumed from %s at step %d", prefix, self.step)
        return True
