"""CheckpointKeeper with damaged checkpoint files, a damaged state file and NaN weights."""

import os

import keras
import numpy as np
import pytest
import tensorflow as tf
from absl import logging

from pspnet_tf.errors import UserError
from pspnet_tf.training.checkpoints import STATE_FILE, CheckpointKeeper, checkpoint_files
from pspnet_tf.training.divergence import TrainingDiverged


def make_keeper(directory: str, max_to_keep: int = 3) -> CheckpointKeeper:
    model = keras.Sequential([keras.Input((2,)), keras.layers.Dense(1)])
    model.compile(optimizer=keras.optimizers.SGD(0.1, momentum=0.9), loss="mse")
    model.optimizer.build(model.trainable_variables)
    return CheckpointKeeper(directory, model, model.optimizer, max_to_keep=max_to_keep)


def advance(keeper: CheckpointKeeper, steps: int = 1) -> None:
    """Stands in for training steps: changes the weights and counts the steps."""
    optimizer = keeper._optimizer
    for _ in range(steps):
        optimizer.iterations.assign_add(1)
        for variable in keeper._variables:
            if variable is not optimizer.iterations:
                variable.assign(np.asarray(variable) + 1)


def kernel(keeper: CheckpointKeeper) -> np.ndarray:
    return np.asarray(keeper._variables[0])


@pytest.fixture
def saved(tmp_path):
    """ckpt-1, ckpt-2, ckpt-3 and a keeper's kernel at each step."""
    directory = str(tmp_path / "checkpoints")
    keeper = make_keeper(directory)
    kernels = {}
    for _ in range(3):
        advance(keeper)
        keeper.save()
        kernels[keeper.step] = kernel(keeper)
    return directory, kernels


def snapshot(directory: str) -> dict[str, bytes]:
    """Every checkpoint file's bytes (not the state file, which is meant to be rewritten)."""
    return {name: open(os.path.join(directory, name), "rb").read()
            for names in checkpoint_files(directory).values() for name in names}


@pytest.fixture
def warnings(monkeypatch):
    messages = []
    monkeypatch.setattr(logging, "warning", lambda fmt, *args: messages.append(fmt % args))
    return messages


@pytest.mark.parametrize("damage", [
    "garbled", "empty", "missing", "names a deleted checkpoint"])
def test_damaged_state_file_resumes_from_the_newest_checkpoint_files(saved, damage):
    directory, kernels = saved
    state = os.path.join(directory, STATE_FILE)
    if damage == "garbled":
        open(state, "w").write("model_checkpoint_path: \x00\x17 garbage {{{")
    elif damage == "empty":
        open(state, "w").close()
    elif damage == "missing":
        os.remove(state)
    else:  # the state file still names ckpt-4, whose files are gone
        open(state, "w").write('model_checkpoint_path: "ckpt-4"\n'
                               'all_model_checkpoint_paths: "ckpt-4"\n')
    files = snapshot(directory)

    keeper = make_keeper(directory)
    assert keeper.restore_latest() == 3
    np.testing.assert_array_equal(kernel(keeper), kernels[3])
    assert snapshot(directory) == files  # nothing written over
    assert tf.train.latest_checkpoint(directory).endswith("ckpt-3")  # state file repaired
    advance(keeper)
    keeper.save()
    assert sorted(checkpoint_files(directory)) == [2, 3, 4]  # numbering goes on, max_to_keep


@pytest.mark.parametrize("part", ["data", "index"])
def test_truncated_newest_checkpoint_falls_back_with_a_warning_naming_it(saved, part,
                                                                          warnings):
    directory, kernels = saved
    name = next(n for n in checkpoint_files(directory)[3] if f".{part}" in n)
    path = os.path.join(directory, name)
    content = open(path, "rb").read()
    open(path, "wb").write(content[:len(content) // 2])

    keeper = make_keeper(directory)
    assert keeper.restore_latest() == 2
    np.testing.assert_array_equal(kernel(keeper), kernels[2])
    assert len(warnings) == 1 and name in warnings[0] and "ckpt-3" in warnings[0]


def test_no_readable_checkpoint_is_one_error_and_nothing_is_touched(saved):
    directory, _ = saved
    for names in checkpoint_files(directory).values():
        for name in names:
            if ".data" in name:
                open(os.path.join(directory, name), "wb").write(b"\x01")
    before = {name: open(os.path.join(directory, name), "rb").read()
              for name in os.listdir(directory)}

    with pytest.raises(UserError, match="none of the 3 checkpoints .* is readable"):
        make_keeper(directory).restore_latest()
    assert {name: open(os.path.join(directory, name), "rb").read()
            for name in os.listdir(directory)} == before


def test_leftovers_of_a_killed_write_are_removed(saved):
    directory, _ = saved
    leftover = os.path.join(directory, "ckpt-4_temp")
    os.makedirs(leftover)
    open(os.path.join(leftover, "part-00000-of-00001.data-00000-of-00001"), "wb").write(b"x")
    open(os.path.join(directory, "checkpoint.tmp0123abcd"), "w").write("half")

    assert make_keeper(directory).restore_latest() == 3
    assert sorted(os.listdir(directory)) == sorted(
        [STATE_FILE, *[n for names in checkpoint_files(directory).values() for n in names]])


def test_non_finite_weights_are_never_saved_and_never_restored(saved, warnings):
    directory, kernels = saved
    keeper = make_keeper(directory)
    keeper.restore_latest()
    advance(keeper)
    keeper._variables[0].assign(tf.fill(keeper._variables[0].shape, np.nan))
    files = snapshot(directory)
    with pytest.raises(TrainingDiverged, match="diverged at step 4"):
        keeper.save()
    assert snapshot(directory) == files

    # A NaN checkpoint (as older versions wrote) is skipped on restore.
    tf.train.Checkpoint(model=keeper._checkpoint.model,
                        optimizer=keeper._optimizer).write(os.path.join(directory, "ckpt-4"))
    fresh = make_keeper(directory)
    assert fresh.restore_latest() == 3
    np.testing.assert_array_equal(kernel(fresh), kernels[3])
    assert any("ckpt-4" in message and "NaN" in message for message in warnings)


def test_a_checkpoint_without_random_states_from_an_older_version_still_resumes(tmp_path,
                                                                               warnings):
    directory = str(tmp_path / "checkpoints")
    model = keras.Sequential([keras.Input((2,)), keras.layers.Dropout(0.1), keras.layers.Dense(1)])
    model.compile(optimizer=keras.optimizers.SGD(0.1, momentum=0.9), loss="mse")
    model.optimizer.build(model.trainable_variables)
    model.optimizer.iterations.assign(7)
    # What pspnet_tf wrote before dropout's random state joined the checkpoint.
    tf.train.Checkpoint(model=model, optimizer=model.optimizer).write(
        os.path.join(directory, "ckpt-7"))
    model.optimizer.iterations.assign(0)
    keeper = CheckpointKeeper(directory, model, model.optimizer)
    assert keeper.restore_latest() == 7
    assert any("holds no random_states" in message for message in warnings)
