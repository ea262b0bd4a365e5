import importlib.util
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


def test_info_lists_every_op_and_its_implementations(capsys: pytest.CaptureFixture[str]) -> None:
    from speechattn.kernels import implementations

    impls = implementations()
    assert set(impls) >= {
        "sma",
        "viterbi",
        "hmm_forward_backward",
        "attentive_pool",
        "head_attentive_stats",
        "prior_attention",
    }
    for row in impls.values():
        assert row["torch"].startswith("yes")
    assert main(["info"]) == 0
    out = capsys.readouterr().out
    for op, row in impls.items():
        assert op in out
        for name in row:
            assert f"    {name} " in out


def test_registry_resolves_and_rejects_clearly() -> None:
    from speechattn import kernels

    assert kernels.resolve("viterbi", "torch") == "torch"
    assert kernels.resolve("attentive_pool", "fused") == "tiled"  # the old name still works
    assert kernels.resolve("attentive_pool", "auto", "cpu", torch.float16) == "tiled"
    with pytest.raises(ValueError, match="Unknown impl 'cuda' for viterbi"):
        kernels.resolve("viterbi", "cuda")
    with pytest.raises(ValueError, match="runs on cpu tensors"):
        kernels.resolve("viterbi", "numba", "cuda")
    with pytest.raises(TypeError, match="string"):
        kernels.resolve("viterbi", 3)
    with pytest.raises(ValueError, match="Unknown op"):
        kernels.resolve("nope", "auto")


def test_import_compiles_nothing() -> None:
    """Importing the package loads no kernel module and not numba (kernels load on first use)."""
    code = (
        "import sys, speechattn, speechattn.functional, speechattn.nn, speechattn.kernels;"
        "print('numba' in sys.modules,"
        " any(m.startswith('speechattn.kernels.') for m in sys.modules))"
    )
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert res.stdout.split() == ["False", "False"]


@pytest.mark.slow  # compiles every numba kernel when the cache is cold (~20 s of CPU)
@pytest.mark.skipif(importlib.util.find_spec("numba") is None, reason="needs numba")
def test_info_warmup_compiles_every_kernel(capsys: pytest.CaptureFixture[str]) -> None:
    from speechattn.kernels import warmup

    times = warmup()  # compiled or loaded from the cache by earlier tests: quick
    assert set(times) == {
        "speechattn.kernels._numba_sma",
        "speechattn.kernels._numba_align",
        "speechattn.kernels._numba_pool",
    }
    assert main(["info", "--warmup"]) == 0
    assert "warm-up: all kernels" in capsys.readouterr().out
