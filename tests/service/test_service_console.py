"""The web console at /ui in a real browser (headless Chromium, no outside network)
against ``lrfr serve`` with the bundled model: ORL faces enrolled through the page (file
picker and drag and drop), identify and verify with the face box drawn, the answers the
page shows held to the API's own; screenshots under test-artifacts/. Also /docs and
/redoc rendering their operations offline."""

from __future__ import annotations

import base64
import io
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from PIL import Image, ImageFilter

from lrfr.client import Client
from tests.support.browser import (
    chromium,
    console_errors,
    outside,
    requested_urls,
    require_chromium,
    screenshot,
)
from tests.support.service import ADMIN_KEY, CLIENT_KEY, serve_bundled

pytestmark = pytest.mark.slow
TIMEOUT = 60


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """``lrfr serve`` with the bundled model on a fresh SQLite database."""
    require_chromium()
    with serve_bundled(tmp_path_factory.mktemp("console")) as base:
        yield base


@pytest.fixture(scope="module")
def browser(live: str) -> Iterator[Any]:
    with chromium() as driver:
        yield driver


def wait(driver: Any, condition: Any, message: str = "") -> Any:
    from selenium.webdriver.support.ui import WebDriverWait

    return WebDriverWait(driver, TIMEOUT).until(condition, message)


def by_id(driver: Any, name: str) -> Any:
    from selenium.webdriver.common.by import By

    return driver.find_element(By.ID, name)


def text_is(name: str, expected: str) -> Any:
    return lambda driver: by_id(driver, name).text == expected


def visible(name: str) -> Any:
    return lambda driver: by_id(driver, name).is_displayed()


def _blurred(path: Path) -> bytes:
    buffer = io.BytesIO()
    Image.open(path).filter(ImageFilter.GaussianBlur(4)).save(buffer, format="PNG")
    return buffer.getvalue()


_DROP = """
const [target, files, done] = [arguments[0], arguments[1], arguments[arguments.length - 1]];
const transfer = new DataTransfer();
for (const [name, data] of files) {
  const bytes = Uint8Array.from(atob(data), (c) => c.charCodeAt(0));
  transfer.items.add(new File([bytes], name));
}
const zone = document.getElementById(target);
for (const kind of ["dragover", "drop"]) {
  zone.dispatchEvent(
    new DragEvent(kind, {dataTransfer: transfer, bubbles: true, cancelable: true}));
}
done(true);
"""


def drop(driver: Any, zone: str, files: list[tuple[str, bytes]]) -> None:
    """Drops files on a drop zone, as a user dragging them from a file manager would."""
    encoded = [[name, base64.b64encode(data).decode()] for name, data in files]
    driver.execute_async_script(_DROP, zone, encoded)


def choose(driver: Any, field: str, *paths: Path) -> None:
    """Chooses files in a file input, as the picker would."""
    by_id(driver, field).send_keys("\n".join(str(path) for path in paths))


def add_subject(driver: Any, subject: str) -> None:
    by_id(driver, "subject-id").send_keys(subject)
    by_id(driver, "subject-create").click()
    wait(driver, text_is("enroll-subject", f"orl / {subject}"), f"subject {subject} selected")


def enrolled(driver: Any, count: int) -> list[tuple[str, str]]:
    """(class, text) of each file's line once ``count`` files were answered."""
    from selenium.webdriver.common.by import By

    wait(
        driver,
        lambda d: by_id(d, "enroll-result").get_attribute("data-done") == str(count),
        f"{count} files enrolled",
    )
    lines = driver.find_elements(By.CSS_SELECTOR, "#enroll-result li")
    found = [(line.get_attribute("class"), line.text) for line in lines]
    assert len(found) == count, by_id(driver, "enroll-result").get_attribute("outerHTML")
    return found


def canvas_pixel(driver: Any, canvas: str, x: float, y: float) -> list[int]:
    return driver.execute_script(
        "const c = document.getElementById(arguments[0]).getContext('2d');"
        "return Array.from(c.getImageData(arguments[1], arguments[2], 1, 1).data);",
        canvas, round(x), round(y),
    )


def test_console_enrolls_identifies_and_verifies_orl_faces(
    browser: Any, live: str, orl_dir: Path
) -> None:
    from selenium.webdriver.common.by import By

    driver = browser
    requested_urls(driver), console_errors(driver)  # start both logs afresh
    driver.get(f"{live}/ui/")
    wait(driver, lambda d: d.find_element(By.TAG_NAME, "body").get_attribute("data-ready"))
    assert "lrfr-lr-dlib-resnet29-gated" in by_id(driver, "model").text

    by_id(driver, "api-key").send_keys(ADMIN_KEY)
    by_id(driver, "key-save").click()
    wait(driver, text_is("key-status", "key set (kept in this tab only)"))
    stored = driver.execute_script(
        "return [sessionStorage.getItem('lrfr.apiKey'), localStorage.length, document.cookie]"
    )
    assert stored == [ADMIN_KEY, 0, ""]
    assert by_id(driver, "api-key").get_attribute("value") == ""

    by_id(driver, "gallery-name").send_keys("orl")
    by_id(driver, "gallery-create").click()
    wait(driver, text_is("current-gallery", "orl"))

    subjects = [3, 4, 7, 12, 25]
    for subject in subjects[:-1]:  # through the file picker
        add_subject(driver, f"s{subject}")
        choose(driver, "enroll-files", *(orl_dir / f"s{subject}" / f"{i}.pgm" for i in range(1, 5)))
        lines = enrolled(driver, 4)
        assert [kind for kind, _ in lines] == ["accepted"] * 4, lines
    last = subjects[-1]  # by drag and drop, with one image too blurred to enroll
    add_subject(driver, f"s{last}")
    files = [(f"{i}.pgm", (orl_dir / f"s{last}" / f"{i}.pgm").read_bytes()) for i in range(1, 5)]
    files.append(("blurred.png", _blurred(orl_dir / f"s{last}" / "5.pgm")))
    drop(driver, "enroll-drop", files)
    lines = enrolled(driver, 5)
    assert sorted(kind for kind, _ in lines) == ["accepted"] * 4 + ["refused"], lines
    refusal = next(text for kind, text in lines if kind == "refused")
    assert refusal.startswith("blurred.png: quality") and "enrollment floor" in refusal
    wait(driver, text_is("subjects-total", "(5 of 5)"), "5 subjects listed")
    wait(
        driver,
        lambda d: all(
            image.get_attribute("naturalWidth") not in (None, "0")
            for image in d.find_elements(By.CSS_SELECTOR, "#subject-list .thumb img")
        )
        and len(d.find_elements(By.CSS_SELECTOR, "#subject-list .thumb img")) == 5,
        "a thumbnail on every subject card",
    )
    assert len(driver.find_elements(By.CSS_SELECTOR, "#subject-faces img")) == 4
    screenshot(driver, "console-galleries")

    api = Client(live, CLIENT_KEY)
    assert api.get_gallery("orl").faces == 20

    # identify a face that was not enrolled
    driver.find_element(By.CSS_SELECTOR, '.tab[data-tab="identify"]').click()
    wait(driver, visible("identify-drop"))
    probe = orl_dir / "s7" / "9.pgm"
    choose(driver, "identify-file", probe)
    wait(driver, visible("identify-result"), "identify answered")
    expected = api.identify(probe, gallery="orl")
    assert expected.decision == "match" and expected.matches[0].subject == "s7"
    assert by_id(driver, "identify-decision").text == "match"
    assert by_id(driver, "identify-subject").text == "s7"
    assert by_id(driver, "identify-threshold").text == f"{expected.threshold:.3f}"
    assert by_id(driver, "identify-quality").text == f"{expected.quality.laplacian:.2f}"
    assert by_id(driver, "identify-far").text == expected.far
    assert by_id(driver, "identify-band").text == expected.band.label
    rows = driver.find_elements(By.CSS_SELECTOR, "#identify-matches tbody tr")
    assert [row.get_attribute("data-subject") for row in rows] == [
        match.subject for match in expected.matches
    ]
    face_on_canvas(driver, "identify-canvas", expected.face.box, expected.face.landmarks)
    screenshot(driver, "console-identify")

    # verify: the same person, then two people
    driver.find_element(By.CSS_SELECTOR, '.tab[data-tab="verify"]').click()
    wait(driver, visible("verify-drop1"))
    for first, second, decision in (
        (orl_dir / "s12" / "9.pgm", orl_dir / "s12" / "10.pgm", "match"),
        (orl_dir / "s12" / "9.pgm", orl_dir / "s4" / "9.pgm", "no_match"),
    ):
        by_id(driver, "verify-clear").click()
        choose(driver, "verify-file1", first)
        choose(driver, "verify-file2", second)
        wait(driver, visible("verify-result"), "verify answered")
        answer = api.verify(first, second)
        assert answer.decision == decision
        assert by_id(driver, "verify-decision").text == decision
        assert by_id(driver, "verify-similarity").text == f"{answer.similarity:.3f}"
        assert by_id(driver, "verify-threshold").text == f"{answer.threshold:.3f}"
        quality = " and ".join(f"{q.laplacian:.2f}" for q in answer.quality)
        assert by_id(driver, "verify-quality").text == quality
        for index, face in enumerate(answer.faces, start=1):
            face_on_canvas(driver, f"verify-canvas{index}", face.box, face.landmarks)
        screenshot(driver, f"console-verify-{decision}")

    assert console_errors(driver) == []
    assert outside(requested_urls(driver), live) == []


def face_on_canvas(
    driver: Any, canvas: str, box: tuple[float, ...], landmarks: list[list[float]] | None
) -> None:
    """The canvas shows the answer's box: recorded on it, and painted along its right edge
    in a colour (the ORL images are grey)."""
    drawn = driver.execute_script(
        "return JSON.parse(document.getElementById(arguments[0]).dataset.faces)", canvas
    )
    assert drawn == [pytest.approx(list(box))], drawn
    width, image = driver.execute_script(
        "const c = document.getElementById(arguments[0]);"
        "return [c.width, Number(c.dataset.imageWidth)];",
        canvas,
    )
    scale = width / image
    x = min(box[2] * scale, width - 1)
    y = (box[1] + box[3]) / 2 * scale
    pixels = [canvas_pixel(driver, canvas, x + dx, y)[:3] for dx in (-2, -1, 0, 1)]
    assert max(max(p) - min(p) for p in pixels) > 60, pixels
    assert landmarks is None or len(landmarks) == 5


def test_key_is_refused_with_the_services_message(browser: Any, live: str) -> None:
    from selenium.webdriver.common.by import By

    driver = browser
    driver.get(f"{live}/ui/")
    wait(driver, lambda d: d.find_element(By.TAG_NAME, "body").get_attribute("data-ready"))
    by_id(driver, "key-forget").click()
    by_id(driver, "api-key").send_keys("not-a-valid-key-at-all")
    by_id(driver, "key-save").click()
    wait(driver, visible("message"))
    assert by_id(driver, "message").text.startswith("unauthorized: a valid API key is required")
    console_errors(driver)  # the 401 is logged as a failed load: expected here


@pytest.mark.parametrize(
    ("page", "operation"),
    [("docs", ".opblock"), ("redoc", '[data-section-id^="operation/"]')],
)
def test_api_docs_render_their_operations_offline(
    browser: Any, live: str, page: str, operation: str
) -> None:
    from selenium.webdriver.common.by import By

    driver = browser
    schema = Client(live).send(_openapi())
    count = sum(
        method in {"get", "post", "put", "patch", "delete"}
        for item in schema["paths"].values()
        for method in item
    )
    requested_urls(driver), console_errors(driver)
    driver.get(f"{live}/{page}")
    wait(
        driver,
        lambda d: len(d.find_elements(By.CSS_SELECTOR, operation)) >= count,
        f"{count} operations on /{page}",
    )
    assert "/v1/identify" in driver.find_element(By.TAG_NAME, "body").text
    screenshot(driver, f"api-{page}")
    assert outside(requested_urls(driver), live) == []


def _openapi() -> Any:
    from lrfr.client.calls import Call

    return Call("GET", "/openapi.json", lambda response: response.json())
