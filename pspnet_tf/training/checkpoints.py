"""Training checkpoints that survive `kill -9` at any moment.

TensorFlow writes a checkpoint's files first and only then atomically rewrites the
`checkpoint` state file, so the newest listed checkpoint is always complete. If a listed
checkpoint is nevertheless unreadable (a damaged disk, a file truncated later), older
ones are tried before giving up.
"""

import shutil
import tempfile

import keras
import tensorflow as tf
from absl import logging

from pspnet_tf.errors import UserError


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
    plus `extra` trackables (e.g. the running sums of the epoch's losses)."""

    def __init__(self, directory: str, model: keras.Model, optimizer: keras.optimizers.Optimizer,
                 max_to_keep: int = 3, is_chief: bool = True,
                 extra: dict[str, tf.Variable] | None = None) -> None:
        # Every worker must take part in saving; only the chief's copy is kept. Every worker
        # restores from `directory`, so on several machines it must be a shared filesystem.
        self._scratch = None if is_chief else tempfile.mkdtemp(prefix="pspnet_ckpt_")
        self._checkpoint = tf.train.Checkpoint(model=model, optimizer=optimizer,
                                               random_states=random_states(model),
                                               **(extra or {}))
        self._optimizer = optimizer
        self._manager = tf.train.CheckpointManager(
            self._checkpoint, self._scratch or directory, max_to_keep=max_to_keep,
            checkpoint_name="ckpt")
        self.directory = directory

    @property
    def step(self) -> int:
        return int(self._optimizer.iterations.numpy())

    def save(self) -> str:
        """Writes a checkpoint named after the current step (once per step)."""
        path = self._manager.save(checkpoint_number=self.step)
        if self._scratch:
            shutil.rmtree(self._scratch, ignore_errors=True)
        return path

    def restore_latest(self) -> int:
        """Restores the newest readable checkpoint in `directory` (the chief's, also on the
        other workers); returns its step (0 when there is none)."""
        state = tf.train.get_checkpoint_state(self.directory)
        candidates = list(reversed(state.all_model_checkpoint_paths)) if state else []
        for path in candidates:
            try:
                self._checkpoint.read(path).assert_existing_objects_matched()
            except (tf.errors.OpError, AssertionError, ValueError) as error:
                logging.warning("checkpoint %s is unreadable (%s); trying an older one",
                                path, str(error).splitlines()[0])
                continue
            logging.info("resumed from %s at step %d", path, self.step)
            return self.step
        if candidates:
            raise UserError(f"no readable checkpoint in {self.directory} (tried "
                            f"{len(candidates)}); move the directory away to start afresh")
        return 0
