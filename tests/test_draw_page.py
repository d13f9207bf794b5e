"""GET /draw in a real headless Chromium, against a real uvicorn: draw, predict, read the page.

Needs a Chromium: Playwright's own (`python -m playwright install chromium`) or the system's
(Debian package `chromium`, which README's set-up and .ci/run install); Playwright drives it.
Set D4_SCREENSHOT=docs/draw-page.png to save the screenshot README shows (the overview, a conv2
map chosen).

The tests of what the page teaches run on a desktop and on a phone viewport, with the page's
clock under the test's control: the model runs once the pen pauses, and the test says when.
The page runs TinyCNN itself from GET /model/weights; its numbers are checked against the API's
and, for edited weights, against torch's forward pass with the same edit.
"""

import itertools
import os
import time
from collections.abc import Iterator

import pytest
import requests
import torch
from axe_playwright_python.sync_playwright import Axe
from playwright.sync_api import Browser, Page, Route

from conftest import DIGIT_STROKES, SHIPPED_WEIGHTS, drawn, encode, uvicorn_server
from d4.weights import load_weights

PAD_SIZE = 280  # the canvas's own pixels; DIGIT_STROKES are in these
PAUSE_MS = 300  # the page asks the model this long after the pen's last move
DEVICES = {
    "desktop": {"viewport": {"width": 1280, "height": 800}},
    "phone": {"viewport": {"width": 390, "height": 844}, "is_mobile": True, "has_touch": True},
}
ANSWER_SHOWN = (
    "document.querySelector('#digit').textContent !== ''"
    " && document.querySelector('#result').getAttribute('aria-busy') === 'false'"
)


@pytest.fixture(scope="module")
def server() -> Iterator[str]:
    with uvicorn_server() as base_url:
        yield base_url


@pytest.fixture
def page(browser: Browser, server: str) -> Iterator[Page]:
    page = browser.new_page(viewport={"width": 900, "height": 500})
    page.goto(f"{server}/draw")
    yield page
    page.close()


def pad_point(page: Page, x: float, y: float) -> tuple[float, float]:
    box = page.locator("#pad").bounding_box()
    return box["x"] + x * box["width"] / PAD_SIZE, box["y"] + y * box["height"] / PAD_SIZE


def draw_with_mouse(page: Page, digit: int) -> None:
    for stroke in DIGIT_STROKES[digit]:
        page.mouse.move(*pad_point(page, *stroke[0]))
        page.mouse.down()
        for point in stroke[1:]:
            page.mouse.move(*pad_point(page, *point), steps=4)
        page.mouse.up()


def draw_with_finger(page: Page, digit: int) -> None:
    """Touch strokes through Chromium's own touch pipeline, one event per frame, as a finger makes them."""
    finger = page.context.new_cdp_session(page)
    clock = time.time()
    for stroke in DIGIT_STROKES[digit]:
        points = [pad_point(page, *point) for point in stroke]
        moves = [
            {"x": x0 + (x1 - x0) * step / 8, "y": y0 + (y1 - y0) * step / 8}
            for (x0, y0), (x1, y1) in itertools.pairwise(points)
            for step in range(1, 9)
        ]
        start = {"x": points[0][0], "y": points[0][1]}
        events = [("touchStart", [start])] + [("touchMove", [move]) for move in moves]
        events += [
            ("touchMove", [moves[-1]]),
            ("touchEnd", []),
        ]  # the finger rests, then lifts: no fling
        for kind, touch_points in events:
            clock += (
                0.2 if kind == "touchEnd" else 0.016
            )  # one event per frame, then a pause before lifting
            finger.send(
                "Input.dispatchTouchEvent",
                {"type": kind, "touchPoints": touch_points, "timestamp": clock},
            )
    finger.detach()


def is_phone(page: Page) -> bool:
    return page.evaluate("navigator.maxTouchPoints > 0")


def draw(page: Page, digit: int) -> None:
    """With a finger on a phone, with the mouse on a desktop."""
    (draw_with_finger if is_phone(page) else draw_with_mouse)(page, digit)


def press(page: Page, selector: str, **position) -> None:
    """A tap on a phone, a click on a desktop; `position` is relative to the element's top left corner."""
    (page.tap if is_phone(page) else page.click)(selector, **position)


def answer_after_pause(page: Page) -> dict:
    """Let the pen's pause run out on the page's clock; return the API's answer, once the page shows it."""
    with page.expect_response(lambda response: "/predict/image" in response.url) as response:
        page.clock.run_for(PAUSE_MS + 1)
    page.wait_for_function(ANSWER_SHOWN)
    return response.value.json()


def predict_and_read(page: Page) -> tuple[int, dict[int, float]]:
    """Click Predict; return the big digit shown and each bar's width in % of its track."""
    page.click(
        "#predict"
    )  # an answer still on its way (the pen's pause) is superseded: wait for this one
    page.wait_for_function(ANSWER_SHOWN)
    widths = page.eval_on_selector_all(
        "#bars li",
        "rows => rows.map(row => [Number(row.dataset.digit),"
        " 100 * row.querySelector('.fill').getBoundingClientRect().width"
        " / row.querySelector('.track').getBoundingClientRect().width])",
    )
    return int(page.text_content("#digit")), dict(widths)


def test_a_drawn_seven_is_predicted_with_its_bars(page: Page, server: str):
    requested = []
    page.on("request", lambda request: requested.append(request.url))
    draw_with_mouse(page, 7)
    digit, bars = predict_and_read(page)
    assert digit == 7
    assert sorted(bars) == list(range(10))
    assert bars[7] > 90 and sum(bars.values()) == pytest.approx(100, abs=2)
    assert page.get_attribute("#bars li.best", "data-digit") == "7"  # the predicted row stands out
    assert page.text_content("#confidence").endswith("% sure")
    # The small picture shows the 28x28 input the model saw: some white ink on black.
    assert sum(canvas_pixels(page, "#seen")[0::4]) > 0
    assert requested and all(url.startswith(server) for url in requested)  # nothing from elsewhere


def test_every_digit_drawn_on_the_page_is_recognised(page: Page):
    for digit in sorted(DIGIT_STROKES):
        page.click("#clear")
        draw_with_mouse(page, digit)
        assert predict_and_read(page)[0] == digit


def test_clear_empties_the_pad_the_answer_and_the_overview(page: Page):
    assert page.is_hidden("#layers") and page.is_visible(
        "#empty"
    )  # nothing to show before a prediction
    draw_with_mouse(page, 1)
    predict_and_read(page)
    assert page.is_visible("#layers") and page.is_hidden("#empty")
    page.click("#clear")
    assert page.text_content("#digit") == ""
    assert (
        page.eval_on_selector_all(
            "#bars .value", "values => values.map(v => v.textContent).join('')"
        )
        == ""
    )
    assert page.is_hidden("#layers")
    page.click("#predict")
    assert page.text_content("#status") == "Draw a digit first."


def test_the_page_fits_a_phone_and_takes_touch_strokes(browser: Browser, server: str):
    phone = browser.new_context(
        viewport={"width": 390, "height": 844}, is_mobile=True, has_touch=True
    )
    page = phone.new_page()
    page.goto(f"{server}/draw")
    assert page.evaluate("document.documentElement.scrollWidth") <= 390  # no sideways scrolling
    box = page.locator("#pad").bounding_box()
    assert box["x"] >= 0 and box["x"] + box["width"] <= 390 and box["width"] >= 300
    draw_with_finger(page, 4)
    page.tap("#predict")
    page.wait_for_function(ANSWER_SHOWN)
    assert page.text_content("#digit") == "4"
    phone.close()


def test_the_page_its_script_style_and_icon_come_from_the_api(server: str):
    for path, kind in (("/draw", "text/html"), ("/draw.js", "text/javascript"), ("/draw.css", "text/css"),
                       ("/favicon.ico", "image/x-icon")):  # fmt: skip
        response = requests.get(f"{server}{path}", timeout=10)
        assert response.status_code == 200 and response.headers["content-type"].startswith(kind), (
            path
        )
    assert (
        requests.get(f"{server}/favicon.ico", timeout=10).content[:4] == b"\0\0\1\0"
    )  # an ICO file's header


@pytest.fixture(params=sorted(DEVICES))
def device(request: pytest.FixtureRequest, browser: Browser, server: str) -> Iterator[Page]:
    """/draw on a desktop or a phone, its timers stopped until the test runs them (page.clock)."""
    context = browser.new_context(**DEVICES[request.param])
    page = context.new_page()
    page.clock.install()
    page.goto(f"{server}/draw")
    yield page
    context.close()


def canvas_pixels(page: Page, selector: str) -> list[int]:
    """A canvas's own pixels, RGBA, row after row."""
    return page.eval_on_selector(
        selector, "c => Array.from(c.getContext('2d').getImageData(0, 0, c.width, c.height).data)"
    )


def test_a_live_prediction_appears_without_pressing_a_button_once_per_pause(device: Page):
    asked = []
    device.on(
        "request", lambda request: asked.append(request.url) if "/predict" in request.url else None
    )
    draw(device, 7)
    device.clock.run_for(PAUSE_MS - 50)  # the pen has not paused long enough yet
    assert asked == [] and device.text_content("#digit") == ""
    answer = answer_after_pause(device)
    assert device.text_content("#digit") == str(answer["predicted_digit"]) == "7"
    assert len(asked) == 1  # one pause, one request: however many pointer moves the strokes made
    device.clock.run_for(10 * PAUSE_MS)
    assert len(asked) == 1  # nothing more until the drawing changes


NOTES_SHAPES = [
    "[1, 28, 28]",
    "[8, 28, 28]",
    "[8, 14, 14]",
    "[16, 14, 14]",
    "[16, 7, 7]",
    "[784]",
    "[64]",
    "[10]",
]
ROWS = ["input", "conv1", "pool1", "conv2", "pool2", "flatten", "fc1", "logits", "softmax"]


def page_logits(page: Page) -> list[float]:
    return page.eval_on_selector_all(
        "#logits-row .cell", "cells => cells.map(c => Number(c.dataset.value))"
    )


def test_the_overview_shows_every_layer_for_a_drawn_digit_on_one_screen(device: Page, server: str):
    failed = []
    device.on(
        "response", lambda response: failed.append(response.url) if response.status >= 400 else None
    )
    draw(device, 3)
    answer = answer_after_pause(device)
    explanation = answer["explanation"]
    labels = [device.text_content(f"#row-{row} .row-label") for row in ROWS]
    for shape in NOTES_SHAPES:
        assert any(shape in label for label in labels), shape
    sides = {
        stage: device.eval_on_selector_all(
            f"#{stage} .map canvas:first-child", "cs => cs.map(c => c.width)"
        )
        for stage in ("conv1-relu", "conv1-pool", "conv2-relu", "conv2-pool")
    }
    assert sides == {
        "conv1-relu": [28] * 8,
        "conv1-pool": [14] * 8,
        "conv2-relu": [14] * 16,
        "conv2-pool": [7] * 16,
    }
    # One numbering, from 0 as in /model's arrays: the tiles say 0..7 and 0..15.
    numbers = device.eval_on_selector_all("#conv2-pool .map", "ms => ms.map(m => m.dataset.index)")
    assert numbers == [str(n) for n in range(16)]
    assert [
        text.split()[0] for text in device.locator("#conv2-pool .map").all_inner_texts()
    ] == numbers
    # The page's own forward pass (the served weights, in JavaScript) gives the API's numbers.
    for layer in ("conv1", "conv2"):
        pooled = device.eval_on_selector_all(
            f"#{layer}-pool .map", "ms => ms.map(m => JSON.parse(m.dataset.values))"
        )
        assert torch.tensor(pooled) == pytest.approx(
            torch.tensor(explanation["feature_maps"][layer]), abs=1e-4
        )
        lit = [
            canvas_pixels(device, f"#{layer}-relu .map >> nth={n} >> canvas >> nth=0")
            for n in range(2)
        ]
        assert any(max(pixels[0::4]) > 0 for pixels in lit)  # the maps before pooling are drawn
    assert page_logits(device) == pytest.approx(explanation["logits"], abs=1e-4)
    softmax = device.eval_on_selector_all(
        "#softmax-row .cell", "cells => cells.map(c => Number(c.dataset.value))"
    )
    assert softmax == pytest.approx(
        torch.softmax(torch.tensor(explanation["logits"]), 0).tolist(), abs=1e-4
    )
    assert device.get_attribute("#softmax-row .cell.best", "data-digit") == "3"
    assert (
        sum(canvas_pixels(device, "#fc1-mini")[0::4]) > 0
        and device.get_attribute("#fc1-mini", "width") == "64"
    )
    assert device.get_attribute("#flat-mini", "width") == "784"
    assert "the same as the API's" in device.text_content("#source") and device.is_hidden("#whatif")
    width, height = device.viewport_size["width"], device.viewport_size["height"]
    assert device.evaluate("document.documentElement.scrollWidth") <= width  # never sideways
    if not is_phone(
        device
    ):  # a laptop screen holds the pad, the answer and every layer without scrolling
        assert device.evaluate("document.documentElement.scrollHeight") <= height
        assert device.locator("#row-softmax").bounding_box()["y"] + 40 <= height
    assert failed == []  # no 404, for /favicon.ico either


def choose_map(page: Page, selector: str) -> None:
    """The keyboard's focus on a desktop (which lights it without opening it), a tap on a phone (which opens it)."""
    if is_phone(page):
        page.tap(selector)
    else:
        page.focus(selector)


def test_a_chosen_conv2_map_lights_the_conv1_maps_and_kernels_that_feed_it(
    device: Page, server: str
):
    draw(device, 3)
    answer_after_pause(device)
    kernels = requests.get(f"{server}/model", timeout=10).json()["filters"]["conv2"]["weights"]
    for index in (4, 9):
        choose_map(device, f"#conv2-relu .map >> nth={index}")
        chosen = device.eval_on_selector_all(
            ".map.chosen", "ms => ms.map(m => m.dataset.layer + m.dataset.index)"
        )
        assert chosen == [f"conv2{index}", f"conv2{index}"]  # the map and its pooled map
        feeds = device.eval_on_selector_all(".map.feeds", "ms => ms.map(m => m.dataset.layer)")
        assert feeds == ["conv1"] * 16  # conv1's 8 maps, before and after pooling
        shown = device.eval_on_selector_all(
            "#conv1-pool .map .kernel-mini",
            "ks => ks.map(k => k.checkVisibility() && JSON.parse(k.dataset.values))",
        )
        assert shown == [
            sum(kernel, []) for kernel in kernels[index]
        ]  # each conv1 map's own 3x3 kernel, as served
        if not is_phone(device):
            assert device.locator("#wires line").count() == 9  # 8 lines in, one to the pooled map
    if is_phone(device):
        assert device.is_visible("#detail")
    elif path := os.environ.get("D4_SCREENSHOT"):
        device.evaluate("window.scrollTo(0, 0)")
        device.screenshot(path=path)


def tap_cell(page: Page, row: int, col: int, side: int) -> float:
    """Tap one value of the large map; return what the page's own arithmetic made of it."""
    box = page.locator("#big").bounding_box()
    position = {"x": (col + 0.5) * box["width"] / side, "y": (row + 0.5) * box["height"] / side}
    press(page, "#big", position=position)
    page.wait_for_function(
        f"document.querySelector('#cell h3')?.textContent.includes('row {row}, column {col} ')"
    )
    return float(page.get_attribute("#cell", "data-value"))


def cells_to_check(feature_map: list[list[float]]) -> list[tuple[int, int]]:
    """The strongest value, a corner (its patches reach into the zero padding) and the weakest value above zero."""
    values = {
        (row, col): value for row, line in enumerate(feature_map) for col, value in enumerate(line)
    }
    lit = [cell for cell, value in values.items() if value > 0]
    return [max(values, key=values.get), (0, 0), min(lit, key=values.get, default=(1, 1))]


def shown_values(page: Page, selector: str) -> torch.Tensor:
    return torch.tensor(page.eval_on_selector(selector, "c => JSON.parse(c.dataset.values)"))


def strongest(maps: list) -> int:
    """The filter whose map is brightest for this drawing (read from the answer: no filter is assumed alive)."""
    return max(range(len(maps)), key=lambda index: max(max(row) for row in maps[index]))


def test_each_step_is_a_picture_and_each_tapped_values_arithmetic_equals_the_apis(
    device: Page, server: str
):
    draw(device, 3)
    answer = answer_after_pause(device)
    filters = requests.get(f"{server}/model", timeout=10).json()["filters"]
    maps = answer["explanation"]["feature_maps"]
    for layer, side in (("conv1", 28), ("conv2", 14)):
        index = strongest(maps[layer])
        press(device, f"#{layer}-pool .map >> nth={index}")
        assert device.is_visible("#detail")
        count = len(filters[layer]["biases"])
        assert device.text_content("#detail-title").startswith(
            f"{layer}, filter {index} (filters 0–{count - 1}"
        )
        # conv before ReLU (signed), after ReLU, after pooling: side by side, each what the notes say of it.
        before, after, pooled = (
            shown_values(device, f"#{name}") for name in ("step-conv", "step-relu", "big")
        )
        assert before.shape == (side, side) and before.min() < 0 < before.max()
        assert torch.equal(after, before.clamp_min(0))  # "Negative values become zero"
        assert torch.equal(
            pooled, torch.nn.functional.max_pool2d(after[None], 2)[0]
        )  # "keeps strongest"
        assert pooled == pytest.approx(
            torch.tensor(maps[layer][index]), abs=1e-4
        )  # the API's pooled map
        captions = device.text_content("#detail .steps-strip")
        assert (
            "Negative values become zero." in captions
            and "Pooling keeps strongest activations." in captions
        )
        assert f"[{side}, {side}]" in captions and f"[{side // 2}, {side // 2}]" in captions
        # The signed picture: blue below zero, red above, on a legend with its numbers.
        pixels = canvas_pixels(device, "#step-conv")
        flat = before.flatten().tolist()
        low, high = flat.index(min(flat)), flat.index(max(flat))
        assert pixels[4 * low + 2] > pixels[4 * low] and pixels[4 * high] > pixels[4 * high + 2]
        assert f"{before.abs().max():.2f}" in device.text_content("#legend-step-conv")
        # Its kernel as served, and the arithmetic of tapped values.
        kernel = device.eval_on_selector_all(
            "#kernel .grid3 span", "cells => cells.map(c => Number(c.dataset.value))"
        )
        served = [
            weight
            for channel in filters[layer]["weights"][index]
            for row in channel
            for weight in row
        ]
        assert kernel == served and len(kernel) == 9 * (1 if layer == "conv1" else 8)
        assert f"{filters[layer]['biases'][index]:.3f}".replace("-", "−") in device.text_content(
            "#bias"
        )
        for row, col in cells_to_check(maps[layer][index]):
            assert tap_cell(device, row, col, side // 2) == pytest.approx(
                maps[layer][index][row][col], abs=1e-4
            )
            assert "the same, to 0.0001" in device.text_content("#cell")
    # conv2 on empty paper: the page says what the band at the edge is.
    assert "padding" in device.text_content("#empty-paper") and "bias" in device.text_content(
        "#empty-paper"
    )
    width = device.viewport_size[
        "width"
    ]  # conv2's tables and 8 kernels open: still no sideways scrolling
    assert device.evaluate("document.documentElement.scrollWidth") <= width


def torch_logits(pixels: list[list[float]], edit) -> list[float]:
    """The served model's logits for these pixels, its weights changed by `edit(model)` first."""
    model = load_weights(SHIPPED_WEIGHTS)
    with torch.no_grad():
        edit(model)
        return model(torch.tensor(pixels).reshape(1, 1, 28, 28))[0].tolist()


def test_editing_a_kernel_or_switching_a_filter_off_changes_the_logits_as_torch_does(
    device: Page, server: str
):
    draw(device, 3)
    answer = answer_after_pause(device)
    asked = []
    device.on("request", lambda request: asked.append(request.url))
    served = page_logits(device)
    assert served == pytest.approx(answer["explanation"]["logits"], abs=1e-4)
    index = strongest(answer["explanation"]["feature_maps"]["conv1"])
    press(device, f"#conv1-pool .map >> nth={index}")
    kernel = [0.5, -0.25, 0.125, 1.0, -1.0, 0.75, -0.5, 0.25, 2.0]  # exact in float32 too
    fields = device.locator("#editor-grid input")
    assert fields.count() == 9
    for position, weight in enumerate(kernel):
        fields.nth(position).fill(str(weight))
    edited = page_logits(device)

    def edit_kernel(model):
        model.conv1.weight[index, 0] = torch.tensor(kernel).reshape(3, 3)

    assert edited == pytest.approx(torch_logits(answer["input"], edit_kernel), abs=1e-4)
    assert edited != pytest.approx(served, abs=1e-3)
    banner = device.text_content("#whatif")
    assert device.is_visible("#whatif") and f"conv1 filter {index}'s kernel" in banner
    assert "not the served model's" in banner and device.text_content("#source") == ""
    assert "differs" in device.text_content(
        "#cell"
    )  # the arithmetic is the edited model's, no longer the API's
    # Switching a conv2 filter off as well: its weights and bias to 0.
    off = strongest(answer["explanation"]["feature_maps"]["conv2"])
    press(device, f"#conv2-pool .map >> nth={off}")
    device.check("#filter-off")

    def edit_both(model):
        edit_kernel(model)
        model.conv2.weight[off] = 0
        model.conv2.bias[off] = 0

    assert page_logits(device) == pytest.approx(torch_logits(answer["input"], edit_both), abs=1e-4)
    assert f"conv2 filter {off} switched off" in device.text_content("#whatif")
    assert max(shown_values(device, "#big").flatten().tolist()) == 0
    assert not any("/predict" in url for url in asked)  # the server never ran the edited weights
    press(device, "#reset")
    assert page_logits(device) == pytest.approx(answer["explanation"]["logits"], abs=1e-4)
    assert device.is_hidden("#whatif") and "the same as the API's" in device.text_content("#source")
    assert not device.is_checked("#filter-off")


def test_the_softmax_view_shows_the_other_digits_chances(device: Page, server: str):
    draw(device, 2)
    answer = answer_after_pause(device)
    press(device, "#open-fc")
    assert device.is_visible("#fc-panel")

    def rows() -> list[dict]:
        return device.eval_on_selector_all(
            "#softmax-table tbody tr",
            "rows => rows.map(r => ({logit: Number(r.dataset.logit), p: Number(r.dataset.probability),"
            " width: Number(r.lastChild.dataset.width), text: r.children[3].textContent}))",
        )

    table = rows()
    assert [row["logit"] for row in table] == pytest.approx(
        answer["explanation"]["logits"], abs=1e-4
    )
    # T = 1 is the model's own softmax: the API's probabilities for this very picture.
    plain = requests.post(f"{server}/predict", json={"pixels": answer["input"]}, timeout=10).json()
    assert [row["p"] for row in table] == pytest.approx(plain["probabilities"], abs=1e-4)
    best = answer["explanation"]["logits"].index(max(answer["explanation"]["logits"]))
    assert best == 2 and device.get_attribute("#softmax-table tr.best", "data-digit") == "2"
    others = [row for digit, row in enumerate(table) if digit != best]
    assert all(
        row["text"] not in ("0.0%", "0") for row in others
    )  # a small chance is written, not rounded away
    # On a log scale every digit's bar shows.
    device.check("#log-scale")
    assert all(row["width"] > 0.01 for row in rows())
    # A higher temperature evens the chances out, in the same order, with the same answer.
    device.fill("#temperature", "4")  # T = 3
    warm = rows()
    assert device.text_content("#temperature-value") == "3"
    assert warm[best]["p"] < table[best]["p"] and max(row["p"] for row in warm) == warm[best]["p"]
    assert sorted(range(10), key=lambda d: warm[d]["p"]) == sorted(
        range(10), key=lambda d: table[d]["p"]
    )
    # fc1's 64 values, each labelled with its unit.
    fc1 = answer["explanation"]["fc1"]
    units = device.eval_on_selector_all(
        "#fc1-grid span", "s => s.map(u => [u.textContent, Number(u.dataset.value)])"
    )
    assert [text for text, _ in units] == [f"{unit}{value:.2f}" for unit, value in enumerate(fc1)]
    assert [value for _, value in units] == pytest.approx(fc1, abs=1e-4)
    assert "[16, 7, 7] → [784]" in device.text_content(
        "#fc-panel"
    ) and "784 → 64" in device.text_content("#fc-panel")


def test_a_photo_uploaded_through_the_page_gives_the_digit(device: Page):
    photo = encode(
        drawn(5, "RGB", paper=(214, 208, 196), pen=(40, 42, 60)).rotate(
            4, fillcolor=(214, 208, 196)
        ),
        "JPEG",
    )
    with device.expect_response(lambda response: "/predict/image" in response.url) as response:
        device.set_input_files(
            "#file", files=[{"name": "five.jpg", "mimeType": "image/jpeg", "buffer": photo}]
        )
    assert "explain=true" in response.value.url and "return_input=true" in response.value.url
    device.wait_for_function(ANSWER_SHOWN)
    assert device.text_content("#digit") == "5" == str(response.value.json()["predicted_digit"])
    assert device.text_content("#seen-caption") == "what the model saw, from five.jpg"
    assert device.is_visible("#layers") and device.locator("#conv2-pool .map").count() == 16


SERIOUS = ("critical", "serious", "moderate")


def accessibility_problems(page: Page) -> list[tuple[str, str, list]]:
    """axe-core's critical, serious and moderate violations on the page as it is now."""
    results = Axe().run(page)
    return [
        (violation["id"], violation["impact"], [node["target"] for node in violation["nodes"]])
        for violation in results.response["violations"]
        if violation["impact"] in SERIOUS
    ]


def test_axe_finds_no_violation_in_the_overview_or_any_panel(device: Page):
    device.clock.resume()  # axe-core runs on timers of its own
    assert accessibility_problems(device) == []
    draw(device, 8)
    press(device, "#predict")
    device.wait_for_function(ANSWER_SHOWN)
    assert accessibility_problems(device) == []  # the overview
    choose_map(device, "#conv2-relu .map >> nth=3")
    assert accessibility_problems(device) == []  # a map chosen, its inputs lit
    press(
        device, "#conv2-pool .map >> nth=3"
    )  # the steps, the kernels, the editor, the arithmetic's tables
    press(device, "#cell summary")
    assert accessibility_problems(device) == []
    device.locator("#editor-grid input").first.fill("1")  # what if: the banner, the edited maps
    assert accessibility_problems(device) == []
    press(device, "#open-fc")
    device.check("#log-scale")
    assert accessibility_problems(device) == []
    # The live region says the digit and how sure, nothing else.
    live = device.eval_on_selector_all(
        "[aria-live], [role=status], [role=alert], [role=log]",
        "regions => regions.map(r => r.textContent)",
    )
    assert "".join(live) == f"{device.text_content('#digit')}, {device.text_content('#confidence')}"


def test_the_page_is_usable_from_the_keyboard(device: Page):
    device.clock.resume()
    focused = []
    for _ in range(5):
        device.keyboard.press("Tab")
        focused.append(
            device.evaluate("document.activeElement.id || document.activeElement.textContent")
        )
    # The links, the buttons, and the file input: the keyboard's way to give the model a digit.
    assert focused == [
        "The model and its weights (/model)",
        "The API (/docs)",
        "predict",
        "clear",
        "file",
    ]
    with device.expect_response(lambda response: "/predict/image" in response.url):
        device.set_input_files(
            "#file",
            files=[{"name": "one.png", "mimeType": "image/png", "buffer": encode(drawn(1), "PNG")}],
        )
    device.wait_for_function(ANSWER_SHOWN)
    device.focus("#conv1-pool .map >> nth=0")
    device.keyboard.press("Enter")
    assert device.evaluate("document.activeElement.id") == "big" and device.is_visible("#detail")
    heading = device.text_content("#cell h3")
    device.keyboard.press("ArrowRight")
    assert device.text_content("#cell h3") != heading  # the arrow keys move from value to value
    device.focus("#close-detail")
    device.keyboard.press("Enter")
    assert device.is_hidden("#detail")
    assert (
        device.evaluate(
            "document.activeElement.dataset.layer + document.activeElement.dataset.index"
        )
        == "conv10"
    )


# A training record's filter counts (d4.report.filters_firing), given to the page in place of the served
# record's: in it conv2's filters 14 and 15 never fire.
FILTERS_FIRING = {"conv1": [300] * 8, "conv2": [300] * 14 + [0, 0], "of": 300}


def model_card_with(filters_firing: dict | None):
    """Answer the page's GET /model with the served card, its training record's filter counts replaced."""

    def answer(route: Route) -> None:
        card = route.fetch().json()
        card["training"]["filters_firing"] = filters_firing
        route.fulfill(json=card)

    return answer


@pytest.mark.parametrize("filters_firing", [FILTERS_FIRING, None], ids=["counted", "not counted"])
def test_dead_filters_are_marked_from_the_record_and_dark_maps_for_this_drawing(
    browser: Browser, server: str, filters_firing: dict | None
):
    page = browser.new_page(viewport=DEVICES["desktop"]["viewport"])
    page.route("**/model", model_card_with(filters_firing))
    page.clock.install()
    page.goto(f"{server}/draw")
    draw_with_mouse(page, 3)
    maps = answer_after_pause(page)["explanation"]["feature_maps"]
    for layer, layer_maps in maps.items():
        labels = page.locator(f"#{layer}-pool .map").all_inner_texts()
        for index, (label, feature_map) in enumerate(zip(labels, layer_maps, strict=True)):
            dead = filters_firing is not None and filters_firing[layer][index] == 0
            zero = max(max(row) for row in feature_map) == 0
            assert label == f"{index}" + (" dead" if dead else " zero" if zero else "")
    notes = page.text_content("#marks-note")
    assert ("conv2 14, 15." in notes and "never fires" in notes) == (filters_firing is not None)
    press(page, "#conv2-pool .map >> nth=15")
    note = page.text_content("#filter-note")
    if filters_firing:
        assert note.startswith("Dead.") and "dead ReLU" in note
    else:
        zero = max(max(row) for row in maps["conv2"][15]) == 0
        assert note.startswith("Zero for this drawing.") if zero else note == ""
    page.close()


@pytest.mark.parametrize(
    ("server_trouble", "message"),
    [
        (
            {"abort": True},
            "Cannot reach the server. If it was asleep, it is starting; on a free instance",
        ),
        (
            {"status": 502, "body": "<html>Bad gateway</html>"},
            "The server is starting; on a free instance this can take",
        ),
    ],
    ids=["unreachable", "waking up"],
)
def test_a_server_that_is_down_or_waking_gets_a_plain_sentence(
    page: Page, server_trouble: dict, message: str
):
    def trouble(route: Route) -> None:
        if server_trouble.get("abort"):
            route.abort()
        else:
            route.fulfill(**server_trouble)

    page.route("**/predict/image*", trouble)
    draw_with_mouse(page, 1)
    page.click("#predict")
    page.wait_for_function("document.querySelector('#status').textContent !== ''")
    assert page.text_content("#status").startswith(
        message
    ) and "Failed to fetch" not in page.text_content("#status")
    assert page.text_content("#digit") == "" and page.is_hidden("#layers")
