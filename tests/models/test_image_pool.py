"""CycleGAN's image pool and the unpaired FFA partner history: behaviour, determinism, state."""

import io

import pytest
import torch

from fundus2ffa.models.image_pool import ImagePool, PartnerHistory


def image(value: float) -> torch.Tensor:
    """A 1 x 1 x 2 x 2 batch whose pixels all equal ``value`` (so an output tells where it came from)."""
    return torch.full((1, 1, 2, 2), float(value))


def run_pool(pool: ImagePool, start: int, count: int) -> list[float]:
    return [pool.query(image(k))[0, 0, 0, 0].item() for k in range(start, start + count)]


def test_size_zero_passes_through():
    pool = ImagePool(0)
    batch = torch.randn(3, 1, 4, 4, requires_grad=True)
    assert pool.query(batch) is batch
    assert len(pool) == 0


def test_fills_then_returns_stored_images_about_half_the_time():
    torch.manual_seed(0)
    pool = ImagePool(50)
    # filling: the first 50 images come back unchanged and are all stored
    assert run_pool(pool, 0, 50) == list(range(50))
    assert sorted(im[0, 0, 0].item() for im in pool.images) == list(range(50))
    stored_returns = 0
    for k in range(50, 250):
        before = {im[0, 0, 0].item() for im in pool.images}
        out = pool.query(image(k))[0, 0, 0, 0].item()
        after = {im[0, 0, 0].item() for im in pool.images}
        if out == k:  # the new image passed through; the pool is untouched
            assert after == before
        else:  # an earlier image came back and the new one took its slot
            stored_returns += 1
            assert out in before and out < k
            assert after == (before - {out}) | {k}
        assert len(pool) == 50
    # p = 0.5 per image: over 200 draws the share lies within 4 standard deviations (0.035) of 0.5
    assert 0.36 < stored_returns / 200 < 0.64


def test_batch_straddling_the_fill_point():
    torch.manual_seed(1)
    pool = ImagePool(3)
    out = pool.query(torch.arange(5.0).view(5, 1, 1, 1).expand(5, 1, 2, 2))
    assert out[:3, 0, 0, 0].tolist() == [0.0, 1.0, 2.0]  # stored while the pool fills
    assert len(pool) == 3
    assert out.shape == (5, 1, 2, 2)


def test_deterministic_under_a_seed_and_resumable_from_state():
    torch.manual_seed(7)
    a = ImagePool(5)
    first = run_pool(a, 0, 30)
    torch.manual_seed(7)
    b = ImagePool(5)
    assert run_pool(b, 0, 30) == first
    torch.manual_seed(8)
    assert run_pool(ImagePool(5), 0, 30) != first

    # a pool restored from a weights_only checkpoint continues exactly as the original
    buffer = io.BytesIO()
    torch.save(a.state_dict(), buffer)
    buffer.seek(0)
    restored = ImagePool(5)
    restored.load_state_dict(torch.load(buffer, weights_only=True))
    state = torch.get_rng_state()
    expected = run_pool(a, 30, 20)
    torch.set_rng_state(state)
    assert run_pool(restored, 30, 20) == expected


def test_partner_history_never_pairs_an_eye_with_its_own_ffa():
    torch.manual_seed(0)
    history = PartnerHistory(4)
    assert history.exchange(image(0), ["eye0"]) is None  # nothing earlier to pair with
    assert history.exchange(image(0), ["eye0#1"]) is None  # another view of the same eye does not count
    partner = history.exchange(image(1), ["eye1"])
    assert partner[0, 0, 0, 0].item() == 0.0
    seen = set()
    for step in range(40):
        eye = step % 6
        partners = history.exchange(torch.cat([image(eye), image(eye + 100)]), [f"eye{eye}", f"eye{eye + 100}"])
        values = partners[:, 0, 0, 0].tolist()
        assert values[0] != eye and values[1] != eye + 100
        seen.update(values)
        assert len(history) == 4  # the oldest FFAs are dropped
    assert len(seen) > 6  # partners vary


def test_partner_history_deterministic_and_resumable():
    def draws(history, start):
        return [history.exchange(image(k % 5), [f"e{k % 5}"]) for k in range(start, start + 15)]

    torch.manual_seed(3)
    a = PartnerHistory(3)
    first = draws(a, 0)
    torch.manual_seed(3)
    b = PartnerHistory(3)
    assert all((x is None and y is None) or torch.equal(x, y) for x, y in zip(draws(b, 0), first))
    restored = PartnerHistory(3)
    restored.load_state_dict(a.state_dict())
    state = torch.get_rng_state()
    expected = draws(a, 15)
    torch.set_rng_state(state)
    assert all(torch.equal(x, y) for x, y in zip(draws(restored, 15), expected))


def test_bad_sizes_fail():
    with pytest.raises(ValueError, match="pool size"):
        ImagePool(-1)
    with pytest.raises(ValueError, match="history size"):
        PartnerHistory(0)
