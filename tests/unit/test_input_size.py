"""--input-size, one option for every command: N (N x N at the model's channels) or C,H,W."""

from __future__ import annotations

import pytest

from pfconvert.cli._options import InputSize, parse_input_size
from pfconvert.errors import PfconvertError


def test_both_forms_parse() -> None:
    assert parse_input_size("64") == InputSize(None, 64, 64)
    assert parse_input_size("1,32,48") == InputSize(1, 32, 48)
    assert parse_input_size("3x224x224") == InputSize(3, 224, 224)
    assert parse_input_size(None) is None


def test_n_takes_the_model_channels_and_c_h_w_keeps_its_own() -> None:
    assert InputSize(None, 64, 64).shape(channels=1) == (1, 64, 64)
    assert InputSize(3, 32, 48).shape(channels=1) == (3, 32, 48)  # the model refuses it later, naming the size


@pytest.mark.parametrize(("text", "message"), [
    ("3,64", "expected N .* or C,H,W"), ("abc", "expected N"), ("0", "sizes must be positive"),
    ("3,0,4", "sizes must be positive"), ("99999", "at most 16384 pixels a side"),
])
def test_bad_sizes_are_one_line_errors_naming_the_option(text: str, message: str) -> None:
    with pytest.raises(PfconvertError, match=f"^--input-size '{text}': {message}"):
        parse_input_size(text)


def test_a_minimum_side_names_the_option_given() -> None:
    with pytest.raises(PfconvertError, match=r"^--img-size '4': at least 8 pixels a side$"):
        parse_input_size("4", "--img-size", minimum=8)


def test_the_one_side_commands_take_a_square_size_at_the_model_channels() -> None:
    assert InputSize(None, 64, 64).side(channels=3) == 64
    assert InputSize(3, 64, 64).side(channels=3) == 64
    assert InputSize(3, 64, 64).side() == 64  # channels unknown: not checked
    with pytest.raises(PfconvertError, match=r"square input .* give N such as 64, or C,N,N$"):
        InputSize(3, 64, 48).side()
    with pytest.raises(PfconvertError, match=r"the model takes 1 input channels, not 3; give 64 or 1,64,64$"):
        InputSize(3, 64, 64).side(channels=1)
