"""The drawn digits' forms (d4/drawn_digits.py) and the proxy's sets of the other hands' 2, 4, 7 and 9 (issue #29)."""

import math
import random

import bench_handwriting as proxy
import torch
from PIL import Image, ImageOps

from d4.drawn_digits import OTHER_HANDS_FORMS, PAD, draw, varied


def ink_share(picture: Image.Image) -> float:
    """The share of the picture's pixels that are ink (darker than half)."""
    histogram = picture.convert("L").histogram()
    return sum(histogram[:128]) / (picture.width * picture.height)


def test_the_other_hands_forms_are_the_issues_digits_and_fit_the_pad():
    assert sorted(OTHER_HANDS_FORMS) == [2, 4, 7, 9]
    for forms in OTHER_HANDS_FORMS.values():
        assert len(forms) >= 2  # more than one hand's form of each
        for form in forms.values():
            points = [point for stroke in form for point in stroke]
            assert all(0 <= x <= PAD and 0 <= y <= PAD for x, y in points), points
            assert all(len(stroke) >= 2 for stroke in form)


def test_each_form_is_drawn_differently_each_time():
    """A hand's variation: two drawings of one form never give the same picture."""
    rng = random.Random(0)
    for forms in OTHER_HANDS_FORMS.values():
        for form in forms.values():
            assert draw(varied(form, rng), 20).tobytes() != draw(varied(form, rng), 20).tobytes()


def test_the_other_hands_sets_hold_each_digit_and_each_form_in_turn():
    pictures = [proxy.other_hands_form(index) for index in range(60)]
    digits = [digit for digit, _ in pictures]
    assert digits[:8] == [2, 4, 7, 9, 2, 4, 7, 9]
    for digit, forms in OTHER_HANDS_FORMS.items():
        drawn = [form for shown, form in pictures if shown == digit]
        assert all(any(form is shown for shown in drawn) for form in forms.values())


def test_the_thick_16x16_scan_is_binary_stretched_to_its_square_and_thicker_than_the_plain_scan():
    rng = random.Random(0)
    thick, plain = [], []
    for forms in OTHER_HANDS_FORMS.values():
        for form in forms.values():
            scan = proxy.drawn_then_thick_scan(form, rng)
            assert scan.size == (proxy.SENT_SIDE, proxy.SENT_SIDE)
            assert {colour for _, colour in scan.getcolors()} == {0, 255}
            coarse = scan.resize((16, 16), Image.Resampling.NEAREST)
            assert scan == coarse.resize(
                scan.size, Image.Resampling.NEAREST
            )  # blocks of 16x16 pixels
            # Stretched to fill the square: the ink reaches all four edges, whatever the digit's shape.
            assert ImageOps.invert(coarse).getbbox() == (0, 0, 16, 16)
            thick.append(ink_share(scan))
            plain.append(ink_share(proxy.drawn_then_scanned(proxy.scanned_16x16_binary)(form, rng)))
    assert sum(thick) / len(thick) > 1.3 * sum(plain) / len(plain)


def test_the_proxy_builds_the_other_hands_sets_after_the_others_and_leaves_those_unchanged(
    fixture_test_digits, monkeypatch
):
    images, labels = fixture_test_digits
    sets = proxy.proxy_sets(images, labels, 8, seed=0)
    names = list(sets)
    assert names[-len(proxy.OTHER_HANDS_RENDERINGS) :] == list(proxy.OTHER_HANDS_RENDERINGS)
    for name in proxy.OTHER_HANDS_RENDERINGS:
        inputs, truth = sets[name]
        assert truth == [2, 4, 7, 9, 2, 4, 7, 9]
        assert all(pixels is not None and pixels.shape[1:] == (1, 28, 28) for pixels in inputs)
    # Without the new sets, every earlier set is made from the same random numbers as before.
    monkeypatch.setattr(proxy, "OTHER_HANDS_RENDERINGS", {})
    earlier = proxy.proxy_sets(images, labels, 8, seed=0)
    assert list(earlier) == names[: len(earlier)]
    for name, (inputs, truth) in earlier.items():
        assert truth == sets[name][1]
        assert all(torch.equal(a, b) for a, b in zip(inputs, sets[name][0], strict=True))


def test_a_digit_a_set_does_not_hold_scores_nan_and_the_mean_skips_it():
    values = proxy.scores([2, 4, 6, None], [2, 4, 7, 9])
    assert values[0] == 0.5
    per_digit = values[1:]
    assert per_digit[2] == 1 and per_digit[4] == 1 and per_digit[7] == 0 and per_digit[9] == 0
    assert all(math.isnan(per_digit[digit]) for digit in (0, 1, 3, 5, 6, 8))
    assert proxy.mean_of_held((math.nan, 0.5, 1.0)) == 0.75
    assert math.isnan(proxy.mean_of_held((math.nan, math.nan)))
