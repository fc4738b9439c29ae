"""One-line user errors whatever text they quote."""

import pytest

from pspnet_tf.errors import UserError, describe_error, one_line


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
