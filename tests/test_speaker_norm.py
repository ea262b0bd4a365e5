"""Score normalisation (S-norm, AS-norm) of speaker trials against loop references written from
the equations in float64, and its input checks."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from speechattn.recipes.speaker.evaluate import (
    SCORE_NORMS,
    asnorm,
    cohort_stats,
    compute_eer,
    list_cohort_stats,
    normalise_scores,
    snorm,
)


def _unit(x: np.ndarray) -> np.ndarray:
    return x / np.linalg.norm(x, axis=-1, keepdims=True)


def _ref_side(v: np.ndarray, cohort: np.ndarray, top_k: int | None) -> tuple[float, float]:
    """Mean and population std of the (top_k highest) cosines of ``v`` against ``cohort``."""
    s = sorted((float(_unit(v) @ _unit(c)) for c in cohort), reverse=True)
    if top_k is not None:
        s = s[:top_k]
    return float(np.mean(s)), float(np.std(s))


def _ref_norm(
    e: np.ndarray, t: np.ndarray, ce: np.ndarray, ct: np.ndarray, top_k: int | None
) -> float:
    """((s - mu_e) / sd_e + (s - mu_t) / sd_t) / 2 with each side's own cohort."""
    s = float(_unit(e) @ _unit(t))
    me, se = _ref_side(e, ce, top_k)
    mt, st = _ref_side(t, ct, top_k)
    return 0.5 * ((s - me) / se + (s - mt) / st)


@pytest.fixture()
def data() -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    emb = rng.normal(size=(9, 5))
    cohort = rng.normal(size=(7, 5))
    enroll = np.array([0, 0, 3, 8, 5, 2])
    test = np.array([1, 4, 7, 2, 6, 8])
    return emb, cohort, enroll, test


@pytest.mark.parametrize("top_k", [None, 2, 3, 6, 7, 50])
def test_external_cohort_matches_the_equations(data, top_k) -> None:
    emb, cohort, enroll, test = data
    want = [_ref_norm(emb[a], emb[b], cohort, cohort, top_k) for a, b in zip(enroll, test)]
    got = asnorm(emb[enroll], emb[test], cohort, top_k=top_k)
    assert got.dtype == torch.float64 and got.shape == (len(enroll),)
    np.testing.assert_allclose(got.numpy(), want, rtol=1e-10, atol=1e-12)
    method = "snorm" if top_k is None else "asnorm"
    by_file = normalise_scores(emb, enroll, test, method=method, cohort=cohort, top_k=top_k)
    np.testing.assert_allclose(by_file, want, rtol=1e-10, atol=1e-12)
    if top_k is None or top_k >= len(cohort):  # the whole cohort is S-norm
        np.testing.assert_allclose(snorm(emb[enroll], emb[test], cohort).numpy(), want, rtol=1e-10)


@pytest.mark.parametrize("top_k", [None, 2, 4, 6, 7, 100])
def test_list_cohort_leaves_out_the_two_files_of_each_trial(data, top_k) -> None:
    emb, _, enroll, test = data
    want = []
    for a, b in zip(enroll, test):
        others = np.delete(emb, [a, b], axis=0)  # every file of the list but the two scored
        want.append(_ref_norm(emb[a], emb[b], others, others, top_k))
    method = "snorm" if top_k is None else "asnorm"
    got = normalise_scores(emb, enroll, test, method=method, top_k=top_k)
    np.testing.assert_allclose(got, want, rtol=1e-9, atol=1e-10)
    # chunking changes nothing
    small = list_cohort_stats(
        torch.from_numpy(emb),
        torch.from_numpy(enroll),
        torch.from_numpy(test),
        top_k=top_k,
        chunk=2,
    )
    full = list_cohort_stats(
        torch.from_numpy(emb), torch.from_numpy(enroll), torch.from_numpy(test), top_k=top_k
    )
    for x, y in zip(small, full):
        torch.testing.assert_close(x, y)


def test_cohort_stats_is_the_per_row_definition(data) -> None:
    emb, cohort, _, _ = data
    mean, std = cohort_stats(emb, cohort, top_k=3, chunk=4)
    for i in range(len(emb)):
        m, s = _ref_side(emb[i], cohort, 3)
        assert mean[i].item() == pytest.approx(m, abs=1e-12)
        assert std[i].item() == pytest.approx(s, abs=1e-12)


def test_none_is_the_cosine_and_scale_does_not_matter(data) -> None:
    emb, cohort, enroll, test = data
    cos = (_unit(emb[enroll]) * _unit(emb[test])).sum(-1)
    np.testing.assert_allclose(normalise_scores(emb, enroll, test), cos, rtol=1e-12)
    a = normalise_scores(emb, enroll, test, method="asnorm", cohort=cohort, top_k=3)
    b = normalise_scores(3.0 * emb, enroll, test, method="asnorm", cohort=0.5 * cohort, top_k=3)
    np.testing.assert_allclose(a, b, rtol=1e-12)
    f32 = normalise_scores(emb.astype(np.float32), enroll, test, method="snorm", cohort=cohort)
    np.testing.assert_allclose(
        f32, normalise_scores(emb, enroll, test, method="snorm", cohort=cohort), rtol=1e-5
    )


def test_normalisation_fixes_a_ranking_that_cosine_gets_wrong() -> None:
    """Speaker A lives in a crowded region (close to many cohort speakers), speaker B in an empty
    one. A's file against another crowded file scores a higher cosine (0.88) than B's two files
    (0.6), so raw cosines rank that non-target above B's target; S-norm and AS-norm measure each
    score against how close its files are to everybody else, and put every target first."""
    rng = np.random.default_rng(0)
    eye = np.eye(8)
    crowd = _unit(eye[0] + 0.35 * rng.normal(size=(40, 8)))  # the cohort crowds around A
    a1, a2 = _unit(eye[0] + 0.05 * eye[1]), _unit(eye[0] - 0.05 * eye[1])
    other = _unit(eye[0] + 0.35 * rng.normal(size=8))  # a crowded file of another speaker
    b1, b2 = _unit(eye[3] + 0.5 * eye[4]), _unit(eye[3] - 0.5 * eye[4])
    emb = np.stack([a1, a2, other, b1, b2])
    enroll, test = np.array([0, 3, 0, 3, 1]), np.array([1, 4, 2, 2, 2])
    labels = np.array([1, 1, 0, 0, 0])
    raw = normalise_scores(emb, enroll, test)
    assert raw[1] == pytest.approx(0.6)
    assert raw[2] > raw[1] + 0.2  # A's non-target above B's target: cosine ranks them wrongly
    assert compute_eer(raw, labels) > 0.2
    for method, k in (("snorm", None), ("asnorm", 10)):
        s = normalise_scores(emb, enroll, test, method=method, cohort=crowd, top_k=k)
        assert s[labels == 1].min() > s[labels == 0].max() + 0.5, method
        assert compute_eer(s, labels) == 0.0


def test_bad_input_is_named() -> None:
    e = torch.randn(4, 3)
    with pytest.raises(ValueError, match=r"method in \('none', 'snorm', 'asnorm'\); found 'znorm'"):
        normalise_scores(e, [0], [1], method="znorm")  # type: ignore[arg-type]
    assert SCORE_NORMS == ("none", "snorm", "asnorm")
    with pytest.raises(TypeError, match=r"enroll as a torch\.Tensor or numpy\.ndarray; found list"):
        normalise_scores(e, [0], [1])
    idx = torch.tensor([0]), torch.tensor([1])
    with pytest.raises(ValueError, match=r"top_k \(an int >= 2\) for AS-norm; found None"):
        normalise_scores(e, *idx, method="asnorm")
    with pytest.raises(
        ValueError, match=r"top_k as an int >= 2 \(a spread needs two scores\); found 1"
    ):
        normalise_scores(e, *idx, method="asnorm", top_k=1)
    with pytest.raises(ValueError, match=r"cohort with E=3 columns; found 2"):
        snorm(e, e, torch.randn(5, 2))
    with pytest.raises(ValueError, match=r"cohort of at least 2 rows; found 1"):
        snorm(e, e, torch.randn(1, 3))
    with pytest.raises(
        ValueError, match=r"enroll and test with the same number of trials; found 4 and 2"
    ):
        snorm(e, e[:2], torch.randn(5, 3))
    with pytest.raises(ValueError, match=r"Expected cohort \(N, E\); found shape \(5,\)"):
        snorm(e, e, torch.randn(5))
    with pytest.raises(ValueError, match=r"finite emb"):
        normalise_scores(torch.full((4, 3), float("nan")), *idx)
    with pytest.raises(TypeError, match=r"emb as floating point; found torch.int64"):
        normalise_scores(torch.ones(4, 3, dtype=torch.long), *idx)
    with pytest.raises(ValueError, match=r"test indices in \[0, 4\); found 7\.\.7"):
        normalise_scores(e, torch.tensor([0]), torch.tensor([7]))
    with pytest.raises(ValueError, match=r"trial 1 compares file 2 with itself"):
        normalise_scores(e, torch.tensor([0, 2]), torch.tensor([1, 2]), method="snorm")
    with pytest.raises(ValueError, match=r"at least 4 files .* found 3"):
        normalise_scores(e[:3], *idx, method="snorm")


def _load_bench():  # type: ignore[no-untyped-def]
    from tests.bench_module import load_benchmark

    return load_benchmark("speaker_loeo")


def test_loeo_norm_grid_scores_each_variant_as_defined() -> None:
    """``speaker_loeo.py --score-norm-grid``: every cell is the EER of the variant's definition,
    the labelled "other speakers" cohort included (checked against a loop)."""
    from speechattn.recipes.speaker.evaluate import centre_embeddings

    bench = _load_bench()
    rng = np.random.default_rng(3)
    centres = rng.normal(size=(4, 6))
    spk = [f"s{i % 4}" for i in range(16)]
    rows = torch.from_numpy(
        np.stack([centres[i % 4] + 0.9 * rng.normal(size=6) for i in range(16)])
    )
    cohort = torch.from_numpy(rng.normal(size=(10, 6)))
    clab = [f"c{i % 5}" for i in range(10)]
    grid = bench.norm_grid(rows, spk, {"train": (cohort, clab)})
    mean = rows.mean(0)
    x = centre_embeddings(rows, mean)
    iu = np.triu_indices(16, k=1)
    enroll, test = torch.from_numpy(iu[0]), torch.from_numpy(iu[1])
    labels = (np.asarray(spk)[iu[0]] == np.asarray(spk)[iu[1]]).astype(int)

    def eer(s: np.ndarray) -> float:
        return compute_eer(s, labels)

    assert grid["centred"]["eer"] == pytest.approx(eer(normalise_scores(x, enroll, test)))
    assert grid["asnorm10/list"]["eer"] == pytest.approx(
        eer(normalise_scores(x, enroll, test, method="asnorm", top_k=10))
    )
    spk_mean = torch.stack(
        [cohort[[j for j in range(10) if clab[j] == c]].mean(0) for c in sorted(set(clab))]
    )
    want = normalise_scores(
        x, enroll, test, method="snorm", cohort=centre_embeddings(spk_mean, mean)
    )
    assert grid["snorm/train-spk"]["eer"] == pytest.approx(eer(want))
    want = normalise_scores(
        x, enroll, test, method="asnorm", cohort=centre_embeddings(cohort, mean), top_k=5
    )
    assert grid["asnorm5/train-utt"]["eer"] == pytest.approx(eer(want))
    xs = x.numpy()
    for key, k in (("snorm", None), ("asnorm5", 5)):
        ref = []
        for a, b in zip(iu[0], iu[1]):
            others = xs[[j for j in range(16) if spk[j] not in (spk[a], spk[b])]]
            kk = None if k is None else min(k, 8)  # 8: the fewest other files of any trial
            ref.append(_ref_norm(xs[a], xs[b], others, others, kk))
        assert grid[f"{key}/list-other-speakers"]["eer"] == pytest.approx(eer(np.asarray(ref)))
