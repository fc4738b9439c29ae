"""predict.py and evaluate.py --mode/--save_predictions end to end on tiny generated files,
run in this process (`run_command`) but for the peak-memory test, which measures a process."""

import glob
import json
import os

import cv2
import numpy as np
import pytest
from PIL import Image
from helpers import DEMO_MODEL_FLAGS as CONFIG
from helpers import DEMO_SCALE as SCALE
from helpers import (assert_refused_in_one_line, error_lines, run_command, run_python,
                     saved_tiny_weights, script_command)

from pspnet_tf.data.demo import DEMO_PALETTE, generate_demo_dataset
from pspnet_tf.data.images import read_image
from pspnet_tf.inference.predictor import Predictor

STEMS = ("colour", "gray", "rgba", "deep")


def predict(*args: str):
    """pspnet-predict, in this process, for the demo dataset's tiny model."""
    return run_command("pspnet-predict", *CONFIG, *args)


def evaluate(*args: str):
    """pspnet-evaluate, in this process, for the demo dataset's tiny model."""
    return run_command("pspnet-evaluate", *CONFIG, *args)


@pytest.fixture(scope="module")
def weights(tmp_path_factory):
    return saved_tiny_weights(tmp_path_factory.mktemp("weights"), seed=11,
                              num_classes=len(DEMO_PALETTE))


@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
    """A JPEG, a grayscale PNG, an RGBA PNG, a 16-bit PNG (odd sizes) and a corrupt file."""
    folder = tmp_path_factory.mktemp("inputs")
    rng = np.random.default_rng(2)
    colour = rng.integers(0, 256, (37, 53, 3), dtype=np.uint8)
    cv2.imwrite(str(folder / "colour.jpg"), colour)
    Image.fromarray(rng.integers(0, 256, (30, 41), dtype=np.uint8)).save(folder / "gray.png")
    rgba = rng.integers(0, 256, (25, 19, 4), dtype=np.uint8)
    Image.fromarray(rgba, mode="RGBA").save(folder / "rgba.png")
    cv2.imwrite(str(folder / "deep.png"), rng.integers(0, 65536, (23, 31, 3), dtype=np.uint16))
    (folder / "broken.png").write_bytes(b"not an image at all")
    return str(folder)


STALE = b"an earlier prediction"


@pytest.fixture(scope="module")
def predicted(weights, inputs, tmp_path_factory):
    """One run over the folder, into an output folder that already holds a stale label file."""
    output = str(tmp_path_factory.mktemp("predicted") / "out")
    os.makedirs(os.path.join(output, "labels"))
    with open(os.path.join(output, "labels", "colour.png"), "wb") as handle:
        handle.write(STALE)
    result = predict(f"--weights={weights[1]}", f"--input={inputs}",
                     f"--output={output}", "--side_by_side", "--overwrite")
    assert result.returncode == 1, result.stderr[-3000:]  # broken.png was skipped
    return output, result


def test_every_readable_image_gets_labels_overlay_and_side_by_side(weights, inputs, predicted):
    output, result = predicted
    predictor = Predictor(weights[0], SCALE)
    for stem in STEMS:
        image = read_image(os.path.join(inputs, f"{stem}.{'jpg' if stem == 'colour' else 'png'}"))
        with Image.open(os.path.join(output, "labels", f"{stem}.png")) as labels:
            assert labels.mode == "P"
            assert labels.getpalette()[:3 * len(DEMO_PALETTE)] == DEMO_PALETTE.ravel().tolist()
            np.testing.assert_array_equal(np.asarray(labels), predictor.predict(image))
        with Image.open(os.path.join(output, "overlays", f"{stem}.png")) as picture:
            assert picture.size == image.shape[1::-1] and picture.mode == "RGB"
        with Image.open(os.path.join(output, "side_by_side", f"{stem}.png")) as picture:
            assert picture.size[0] > 2 * image.shape[1] and picture.size[1] >= image.shape[0]
    assert "4 of 5 images" in result.stdout


def test_unreadable_input_is_named_and_skipped_with_exit_status_1(predicted):
    output, result = predicted
    assert "broken.png" in result.stderr and "Traceback" not in result.stderr
    assert "leave it out of --input" in result.stderr and "split" not in result.stderr
    assert not glob.glob(os.path.join(output, "*", "broken.png"))


def test_input_without_a_readable_image_is_an_error(weights, inputs, tmp_path):
    result = predict(f"--weights={weights[1]}",
                     f"--input={os.path.join(inputs, 'broken.png')}", f"--output={tmp_path}",
                     "--allow_skips")
    assert_refused_in_one_line(result, "holds no readable image")
    assert "broken.png" in error_lines(result.stderr)[0]
    assert "split" not in result.stderr


def test_output_that_is_a_file_is_one_error_line(weights, inputs, tmp_path):
    output = tmp_path / "predictions"
    output.write_bytes(STALE)
    result = predict(f"--weights={weights[1]}",
                     f"--input={os.path.join(inputs, 'gray.png')}", f"--output={output}")
    assert_refused_in_one_line(result, "--output")
    assert output.read_bytes() == STALE


def test_folder_listing_takes_every_format_the_decoder_reads(weights, tmp_path):
    folder = tmp_path / "gifs"
    folder.mkdir()
    picture = np.random.default_rng(6).integers(0, 256, (27, 35, 3), dtype=np.uint8)
    Image.fromarray(picture).save(folder / "animated.gif")
    (folder / "broken.jpg").write_bytes(b"not a jpeg")
    output = tmp_path / "out"
    result = predict(f"--weights={weights[1]}", f"--input={folder}",
                     f"--output={output}", "--allow_skips")
    assert result.returncode == 0, result.stderr[-3000:]  # broken.jpg skipped, allowed
    assert "1 of 2 images" in result.stdout and "broken.jpg" in result.stderr
    image = read_image(str(folder / "animated.gif"))
    with Image.open(output / "labels" / "animated.png") as labels:
        np.testing.assert_array_equal(np.asarray(labels),
                                      Predictor(weights[0], SCALE).predict(image))


# Runs a command and prints the peak resident memory of it (its only child), in KiB.
PEAK_MEMORY = ("import resource, subprocess, sys; subprocess.run(sys.argv[1:], check=True); "
               "print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)")
LARGE = 1200  # pixels square; ADE20K's 150 classes
# Measured: 825 MB with logits resized in bands of rows, 1606 MB with full-size float logits
# (864 MB per copy), as predict.py computed them before.
LARGE_MEMORY_BOUND_MB = 1200


# Measured with --confidence=16bit --confidence_threshold=0.5: 900 MB (the confidence is
# computed by the same bands, never as full-size probabilities).
@pytest.mark.parametrize("options", [(), ("--confidence=16bit", "--confidence_threshold=0.5")])
def test_a_large_image_with_many_classes_is_predicted_in_bounded_memory(tmp_path, options):
    saved_tiny_weights(tmp_path, seed=12, num_classes=150)
    picture = np.random.default_rng(9).integers(0, 256, (LARGE // 40, LARGE // 40, 3), np.uint8)
    cv2.imwrite(str(tmp_path / "large.jpg"), cv2.resize(picture, (LARGE, LARGE)))
    result = run_python("-c", PEAK_MEMORY, *script_command(
        "predict.py", *CONFIG, "--dataset=ade20k", "--num_classes=150",
        f"--weights={tmp_path / 'w.h5'}", f"--input={tmp_path / 'large.jpg'}",
        f"--output={tmp_path / 'out'}", *options))
    assert result.returncode == 0, result.stderr[-3000:]
    peak_mb = int(result.stdout.split()[-1]) / 1024
    assert peak_mb < LARGE_MEMORY_BOUND_MB, f"peak resident memory {peak_mb:.0f} MB"
    with Image.open(tmp_path / "out" / "labels" / "large.png") as labels:
        assert labels.size == (LARGE, LARGE)


def test_evaluate_refuses_an_unwritable_output_before_evaluating(weights, tmp_path):
    blocker = tmp_path / "metrics"
    blocker.write_bytes(STALE)
    result = evaluate(f"--data_root={tmp_path / 'no_data'}",
                      f"--weights={weights[1]}", f"--output={blocker / 'm.json'}")
    assert_refused_in_one_line(result, "--output")
    assert blocker.read_bytes() == STALE


def test_existing_outputs_are_kept_unless_overwrite(weights, inputs, predicted, tmp_path):
    output, _ = predicted
    with open(os.path.join(output, "labels", "colour.png"), "rb") as handle:
        assert handle.read() != STALE  # replaced: the fixture passed --overwrite
    kept = tmp_path / "kept"
    (kept / "overlays").mkdir(parents=True)
    (kept / "overlays" / "gray.png").write_bytes(STALE)
    refused = predict(f"--weights={weights[1]}",
                      f"--input={os.path.join(inputs, 'gray.png')}", f"--output={kept}")
    assert refused.returncode == 2
    assert "--overwrite" in refused.stderr and "Traceback" not in refused.stderr
    assert (kept / "overlays" / "gray.png").read_bytes() == STALE
    assert not (kept / "labels").exists()


def test_evaluate_slide_mode_saves_predictions_and_reports_metrics(weights, tmp_path):
    root = str(tmp_path / "demo")
    generate_demo_dataset(root, num_train=1, num_val=2, image_size=40)
    saved, metrics = str(tmp_path / "saved"), str(tmp_path / "metrics.json")
    result = evaluate(f"--data_root={root}", f"--weights={weights[1]}",
                      "--mode=slide", "--crop=24,24", "--stride=16,16",
                      f"--save_predictions={saved}", f"--output={metrics}")
    assert result.returncode == 0, result.stderr[-3000:]
    assert "mIoU" in result.stdout and "aAcc" in result.stdout
    with open(metrics) as handle:
        summary = json.load(handle)
    assert set(summary) == {"mIoU", "aAcc", "mAcc", "mDice", "per_class", "per_class_scores",
                            "confusion_matrix"}
    report = str(tmp_path / "metrics.report")  # beside --output, named after it
    assert f"report written to {os.path.join(report, 'report.md')}" in result.stdout
    # Two validation images, both among the --worst_images=8 shown, worst first.
    worst = sorted(os.listdir(os.path.join(report, "worst")))
    assert [name[3:] for name in worst] in (["val_00000.png", "val_00001.png"],
                                            ["val_00001.png", "val_00000.png"])
    markdown = open(os.path.join(report, "report.md")).read()
    assert markdown.index(f"worst/{worst[0]}") < markdown.index(f"worst/{worst[1]}")
    height, width = read_image(os.path.join(root, "JPEGImages", f"{worst[0][3:-4]}.jpg")).shape[:2]
    panel = Image.open(os.path.join(report, "worst", worst[0])).size
    assert panel == (3 * width + 2 * 4, height)  # image | ground truth | prediction
    counts = np.loadtxt(os.path.join(report, "confusion_matrix.csv"), delimiter=",",
                        skiprows=1, usecols=range(1, 6), dtype=np.int64)
    np.testing.assert_array_equal(counts, summary["confusion_matrix"])
    predictor = Predictor(weights[0], SCALE, window=((24, 24), (16, 16)))
    for name in ("val_00000", "val_00001"):
        image = read_image(os.path.join(root, "JPEGImages", f"{name}.jpg"))
        saved_labels = np.asarray(Image.open(os.path.join(saved, f"{name}.png")))
        np.testing.assert_array_equal(saved_labels, predictor.predict(image))


def test_evaluate_refuses_a_report_dir_holding_files_before_evaluating(weights, tmp_path):
    earlier = tmp_path / "earlier"
    earlier.mkdir()
    (earlier / "report.md").write_bytes(STALE)
    result = evaluate(f"--data_root={tmp_path / 'no_data'}", f"--weights={weights[1]}",
                      f"--output={tmp_path / 'm.json'}", f"--report_dir={earlier}")
    assert_refused_in_one_line(result, "--report_dir")
    assert (earlier / "report.md").read_bytes() == STALE
    assert os.listdir(earlier) == ["report.md"]


def test_a_full_disk_mid_run_removes_this_runs_outputs_and_the_rerun_predicts_all(
        weights, inputs, tmp_path, monkeypatch):
    """The fifth file written meets a full disk: exit 4, one line, none of this run's files
    left, so the same command, rerun, writes every output."""
    import errno

    from pspnet_tf.inference import outputs

    save_output, calls = outputs.save_output, []

    def disk_fills_up(path, write, overwrite=False):
        calls.append(path)

        def write_until_full(temporary):
            if len(calls) == 5:  # as the image writer meets a full disk
                raise OSError(errno.ENOSPC, "No space left on device", temporary)
            write(temporary)

        save_output(path, write_until_full, overwrite)

    output = tmp_path / "out"
    args = (f"--weights={weights[1]}", f"--input={inputs}", f"--output={output}",
            "--allow_skips")
    monkeypatch.setattr(outputs, "save_output", disk_fills_up)
    full = predict(*args)
    assert full.returncode == 4, full.stderr[-3000:]
    assert len(error_lines(full.stderr)) == 1 and "no space left" in full.stderr
    assert "Traceback" not in full.stderr
    assert [name for _, _, names in os.walk(output) for name in names] == []

    monkeypatch.setattr(outputs, "save_output", save_output)
    again = predict(*args)
    assert again.returncode == 0, again.stderr[-3000:]
    assert sorted(os.listdir(output / "labels")) == sorted(f"{stem}.png" for stem in STEMS)
