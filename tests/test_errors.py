"""One-line user errors whatever text they quote."""

import pytest

from pspnet_tf.errors import ParameterError, UserError, describe_error, one_line


def test_one_line_collapses_whitespace_and_escapes_unprintable_characters():
    assert one_line("a\n b\r\n\tc \x1c d\x1a\x08 é") == "a b c d\\x1a\\x08 é"


def test_describe_error_names_the_type_and_cuts_long_messages():
    assert describe_error(ValueError("bad\nvalue")) == "ValueError: bad value"
    assert describe_error(MemoryError()) == "MemoryError"
    long = describe_error(ValueError("x" * 1000), limit=50)
    assert len(long) == 50 and long.startswith("ValueError: xxx") and long.endswith("...")


def test_user_errors_are_one_line_whatever_they_quote():
    quoted = ValueError("\x1a\n\x00")
    with pytest.raises(UserError) as caught:
        raise UserError(f"data.pkl is damaged ({quoted})")
    assert str(caught.value) == "data.pkl is damaged (\\x1a \\x00)"


def test_parameter_errors_name_parameters_and_render_them_otherwise():
    error = ParameterError("{version} must be >= 1, got {value}; see {export_dir}={path!r}",
                           value=0, path="a{b}\nc")
    assert isinstance(error, UserError) and isinstance(error, ValueError)
    assert str(error) == "version must be >= 1, got 0; see export_dir='a{b}\\nc'"
    assert error.parameters == ("version", "export_dir")
    assert error.render(lambda name: f"--{name}") == (
        "--version must be >= 1, got 0; see --export_dir='a{b}\\nc'")


def test_the_command_line_names_the_flags_of_parameters():
    from absl import flags

    from pspnet_tf.cli.app import user_error_line

    values = flags.FlagValues()
    flags.DEFINE_integer("version", None, "", flag_values=values)
    error = ParameterError("{version} must be >= 1; pass it with its {config}, {other}")
    original, flags.FLAGS = flags.FLAGS, values
    try:
        line = user_error_line(error)
    finally:
        flags.FLAGS = original
    assert line == "error: --version must be >= 1; pass it with its --flagfile, other"
    assert user_error_line(UserError("plain")) == "error: plain"
