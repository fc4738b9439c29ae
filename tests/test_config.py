"""Experiment config: the flags its fields generate, flag parsing, flagfiles, config.json."""

import glob
import inspect
import json
import os

import pytest
from absl import flags

from pspnet_tf import config as config_module
from pspnet_tf.config import (
    ExperimentConfig,
    changed_fields,
    config_from_flags,
    define_flags,
    flat_fields,
    parse_numbers,
)
from pspnet_tf.errors import UserError
from pspnet_tf.models import build_pspnet

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# Every experiment flag as the hand-written define_flags defined it before the flags were
# generated from the config's fields: type, default, bounds, enum values and help text.
FROZEN_FLAGS = os.path.join(ROOT, "tests", "data", "experiment_flags.json")


@pytest.fixture()
def parse():
    """Parses argv against a fresh flag registry, like an entry point would."""
    values = flags.FlagValues()
    define_flags(values)

    def parse_args(*args: str) -> ExperimentConfig:
        values(["prog", *args])
        return config_from_flags(values)

    return parse_args


def _flag_listing(values: flags.FlagValues) -> dict:
    listing = {}
    for name in sorted(set(values) - set(flags.FlagValues()) - {"flagfile", "undefok"}):
        flag = values[name]
        listing[name] = {
            "type": flag.flag_type(), "default": flag.default, "help": flag.help,
            "lower_bound": getattr(flag.parser, "lower_bound", None),
            "upper_bound": getattr(flag.parser, "upper_bound", None),
            "enum_values": getattr(flag.parser, "enum_values", None)}
    return listing


def test_generated_flags_are_the_hand_written_ones():
    values = flags.FlagValues()
    define_flags(values)
    with open(FROZEN_FLAGS) as handle:
        assert _flag_listing(values) == json.load(handle)


def test_every_field_has_one_flag_and_one_help_group():
    values = flags.FlagValues()
    define_flags(values)
    fields = flat_fields(json.loads(ExperimentConfig().to_json()))
    assert set(fields) == set(_flag_listing(values))
    grouped = [name for names in config_module.FLAG_GROUPS.values() for name in names]
    assert sorted(grouped) == sorted(fields)
    assert config_module.FLAG_GROUPS["output"] == ("run_dir", "checkpoint_every_steps",
                                                   "num_image_summaries")
    assert "pretrained" in config_module.FLAG_GROUPS["model"]  # a runtime field, --help "model"


def test_the_model_section_is_build_pspnets_keyword_arguments():
    config = ExperimentConfig.from_fields(num_classes=5, backbone="resnet18_v1c",
                                          output_stride=16, psp_channels=16, aux_channels=8)
    parameters = {name for name, parameter in inspect.signature(build_pspnet).parameters.items()
                  if parameter.kind is not parameter.VAR_KEYWORD} - {"training_heads"}
    assert set(config.model.keys()) == parameters
    assert dict(**config.model) == {"num_classes": 5, "backbone": "resnet18_v1c",
                                    "output_stride": 16, "psp_channels": 16,
                                    "aux_channels": 8, "dropout": 0.1}
    assert build_pspnet(**config.model).output_shape == (None, None, None, 5)


def test_config_json_is_nested_by_section_and_round_trips():
    config = ExperimentConfig.from_fields(dataset="demo", crop_size=(64, 96), epochs=3,
                                          output_stride=16, strategy="one_device")
    saved = json.loads(config.to_json())
    assert set(saved) == {"model", "data", "optimizer", "runtime"}
    assert saved["data"]["crop_size"] == [64, 96] and saved["optimizer"]["epochs"] == 3
    assert saved["model"]["output_stride"] == 16 and saved["runtime"]["strategy"] == "one_device"
    assert ExperimentConfig.from_json(config.to_json()) == config


def test_a_config_json_not_nested_by_section_is_refused():
    saved = json.loads(ExperimentConfig().to_json())
    saved["backbone"] = "resnet18_v1c"  # a field outside its section
    with pytest.raises(ValueError, match="one object per section.*also has backbone"):
        ExperimentConfig.from_json(json.dumps(saved))
    with pytest.raises(ValueError, match="also has backbone"):
        changed_fields(saved, ExperimentConfig())


def test_replace_and_from_fields_take_flat_names_and_refuse_unknown_ones():
    config = ExperimentConfig().replace(epochs=3, backbone="resnet18_v1c")
    assert (config.optimizer.epochs, config.model.backbone) == (3, "resnet18_v1c")
    assert config.runtime == ExperimentConfig().runtime
    with pytest.raises(ValueError, match="unknown config fields: colour"):
        ExperimentConfig.from_fields(colour="red")


def test_resumable_fields_come_from_the_field_metadata():
    assert config_module.RESUMABLE_FIELDS == {
        "run_dir", "checkpoint_every_steps", "eval_every_epochs", "num_image_summaries",
        "strategy", "tpu", "data_root", "skip_bad_samples", "tfrecord_dir", "jit_compile",
        "memory_saving", "tap_gradients", "winograd", "divergence_factor"}
    saved = json.loads(ExperimentConfig().to_json())
    resumed = ExperimentConfig.from_fields(run_dir="elsewhere", strategy="one_device",
                                           jit_compile=True)
    assert changed_fields(saved, resumed) == []
    other = ExperimentConfig.from_fields(learning_rate=0.02, crop_size=(64, 64))
    assert changed_fields(saved, other) == [("crop_size", [512, 512], [64, 64]),
                                            ("learning_rate", 0.01, 0.02)]


def test_a_saved_field_the_config_no_longer_has_counts_as_a_change():
    saved = json.loads(ExperimentConfig().to_json())
    saved["data"]["colour"] = "red"
    assert changed_fields(saved, ExperimentConfig()) == [("colour", "red", None)]


@pytest.mark.parametrize("path", sorted(glob.glob(os.path.join(ROOT, "configs", "*.cfg"))))
def test_every_flagfile_parses(parse, path):
    config = parse(f"--flagfile={path}")
    assert config.runtime.run_dir.endswith(os.path.basename(path)[:-4])


def test_seed_table_flagfiles_carry_the_published_recipe(parse):
    voc = parse(f"--flagfile={ROOT}/configs/voc_r101_d16.cfg")
    assert (voc.model.backbone, voc.model.output_stride, voc.model.num_classes) == (
        "resnet101_v1c", 16, 21)
    assert (voc.data.crop_size, voc.optimizer.batch_size, voc.optimizer.epochs) == (
        (512, 512), 16, 60)
    city = parse(f"--flagfile={ROOT}/configs/cityscapes_r50.cfg")
    assert (city.data.crop_size, city.data.scale, city.optimizer.batch_size,
            city.optimizer.epochs) == ((512, 1024), (2048, 1024), 8, 220)
    ade = parse(f"--flagfile={ROOT}/configs/ade20k_r50.cfg")
    assert (ade.model.num_classes, ade.optimizer.epochs, ade.optimizer.learning_rate) == (
        150, 130, 0.01)


def test_command_line_overrides_the_flagfile(parse):
    config = parse(f"--flagfile={ROOT}/configs/voc_r50.cfg", "--batch_size=8", "--crop_size=64,96")
    assert config.optimizer.batch_size == 8 and config.data.crop_size == (64, 96)


def test_every_flag_reaches_its_field(parse):
    config = parse("--dataset=demo", "--output_stride=16", "--ratio_range=0.75,1.5",
                   "--jit_compile", "--epochs=3", "--tpu=local", "--cat_max_ratio=0.5")
    assert config.model.output_stride == 16 and isinstance(config.model.output_stride, int)
    assert config.data.ratio_range == (0.75, 1.5) and config.data.cat_max_ratio == 0.5
    assert (config.runtime.jit_compile, config.runtime.tpu) == (True, "local")
    assert config.optimizer.epochs == 3 and config.model.num_classes == 5


@pytest.mark.parametrize("flag, message", [
    ("--crop_size=512", ("--crop_size=512 is not two positive numbers; write it like "
                         "--crop_size=512,512")),
    ("--scale=a,b", "--scale=a,b is not two positive numbers; write it like --scale=2048,512"),
    ("--ratio_range=2.0,0.5", ("--ratio_range=2.0,0.5: the first value must not exceed the "
                               "second")),
    ("--crop_size=0,5", "--crop_size=0,5 is not two positive numbers")])
def test_malformed_values_are_one_line_user_errors(parse, flag, message):
    with pytest.raises(UserError) as error:
        parse(flag)
    assert str(error.value).startswith(message) and "\n" not in str(error.value)


def test_the_one_number_list_parser_of_the_commands():
    assert parse_numbers("ratios", ["0.5", "1"], float, None, (1.0,)) == (0.5, 1.0)
    assert parse_numbers("crop", ["512", "384"], int, 2, (512, 512)) == (512, 384)
    for values, count in ((["1.5", "2"], 2), (["8"], 2), ([], None), (["1", "-1"], None)):
        with pytest.raises(UserError) as error:
            parse_numbers("crop", values, int, count, (512, 512))
        amount = "two" if count else "a list of"
        assert str(error.value) == (f"--crop={','.join(values)} is not {amount} positive "
                                    "numbers; write it like --crop=512,512")


@pytest.mark.parametrize("flag", ["--output_stride=12", "--dropout=1.5", "--batch_size=0",
                                  "--strategy=gpu"])
def test_values_outside_the_bounds_or_choices_are_refused_by_the_flag(parse, flag):
    with pytest.raises(flags.IllegalFlagValueError, match=flag.split("=")[0]):
        parse(flag)


@pytest.mark.parametrize("dataset, count", [("voc", 21), ("demo", 5), ("ade20k", 150),
                                            ("cityscapes", 19)])
def test_num_classes_defaults_to_the_datasets_class_count(parse, dataset, count):
    assert parse(f"--dataset={dataset}").model.num_classes == count


def test_num_classes_of_a_folder_dataset_is_the_line_count_of_classes_txt(parse, tmp_path):
    (tmp_path / "classes.txt").write_text("background\ncrack\nrust\n")
    assert parse("--dataset=folder", f"--data_root={tmp_path}").model.num_classes == 3
    with pytest.raises(UserError, match="classes.txt not found"):
        parse("--dataset=folder", f"--data_root={tmp_path / 'elsewhere'}")


def test_an_explicit_num_classes_is_kept_for_the_dataset_check(parse):
    # The training, evaluation and verify checks compare it with the dataset and stop.
    assert parse("--dataset=cityscapes", "--num_classes=21").model.num_classes == 21
