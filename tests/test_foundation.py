import subprocess
import sys

import pytest
import torch

from speechattn.cli import main
from speechattn.functional import check_lengths, lengths_to_valid_mask, valid_mask_to_lengths


def test_info_reports_versions_and_fast_paths(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["info"]) == 0
    out = capsys.readouterr().out
    assert "speechattn" in out and torch.__version__ in out
    assert "numba" in out and "triton" in out


def test_help_runs_as_module() -> None:
    res = subprocess.run(
        [sys.executable, "-m", "speechattn", "--help"], capture_output=True, text=True, check=False
    )
    assert res.returncode == 0, res.stderr
    assert "info" in res.stdout


def test_check_lengths_errors_name_index() -> None:
    with pytest.raises(ValueError, match=r"text_lengths\[1\] = 0"):
        check_lengths(torch.tensor([3, 0]), "text_lengths", batch=2, max_len=4)
    with pytest.raises(ValueError, match=r"found text_lengths\[0\] = 5"):
        check_lengths(torch.tensor([5, 1]), "text_lengths", batch=2, max_len=4)
    with pytest.raises(TypeError, match="integer"):
        check_lengths(torch.tensor([1.0, 2.0]), "x_lengths", batch=2, max_len=4)
    with pytest.raises(ValueError, match=r"shape \(2,\)"):
        check_lengths(torch.tensor([1, 2, 3]), "x_lengths", batch=2, max_len=4)
    out = check_lengths(None, "x_lengths", batch=3, max_len=7)
    assert out.tolist() == [7, 7, 7]


def test_mask_round_trip() -> None:
    lengths = torch.tensor([1, 4, 2])
    mask = lengths_to_valid_mask(lengths, 5)
    assert mask.sum(-1).tolist() == [1, 4, 2]
    assert valid_mask_to_lengths(mask).tolist() == [1, 4, 2]
    mask[0, 3] = True
    with pytest.raises(ValueError, match="gaps"):
        valid_mask_to_lengths(mask)
