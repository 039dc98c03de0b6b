"""The web console in a real browser: headless Chromium (Debian's `chromium`) driven by Playwright, against a real
service process with real models, on real LFW photos.

Screenshots of every screen go to `ANYFACE_CONSOLE_SCREENSHOTS` (docs/console/ when `make console-shots` runs
this), else to the test's temporary folder. Photos and thumbnails are flat grey patches in the screenshots: LFW
faces are not for the repository.
"""

from __future__ import annotations

import base64
import json
import os
import shutil
import sqlite3
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from playwright.sync_api import Browser, FilePayload, Page, ViewportSize, sync_playwright

from tests.conftest import ServiceProcess, lfw_photo
from tests.images import blank, side_by_side

ADMIN_KEY, VIEWER_KEY, SCOPED_KEY = "admin-key-for-console", "viewer-key-for-console", "scoped-key-for-console"
PERSON_A, PERSON_B = "Aaron_Peirsol", "Abdullah_Gul"  # peopleDevTest people with 3+ photos
FACES = "canvas.photo, img.thumb, .face-card img"
NARROW: ViewportSize = {"width": 360, "height": 740}


def chromium_path() -> str:
    path = os.environ.get("ANYFACE_CHROMIUM") or shutil.which("chromium") or shutil.which("chromium-browser")
    if not path:
        pytest.skip("no chromium executable: `make system-deps` installs Debian's chromium (or set ANYFACE_CHROMIUM)")
    return path


@pytest.fixture(scope="module")
def shots(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = os.environ.get("ANYFACE_CONSOLE_SCREENSHOTS")
    path = Path(folder) if folder else tmp_path_factory.mktemp("console-shots")
    path.mkdir(parents=True, exist_ok=True)
    return path


@pytest.fixture(scope="module")
def service(model_dir: Path, lfw_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServiceProcess]:
    store = tmp_path_factory.mktemp("console-store") / "gallery.sqlite3"
    keys = [{"key": ADMIN_KEY, "name": "operator"}, {"key": VIEWER_KEY, "name": "auditor", "read_only": True},
            {"key": SCOPED_KEY, "name": "team", "galleries": ["audit"]}]
    proc = ServiceProcess({"ANYFACE_STORE": f"sqlite:///{store}", "ANYFACE_API_KEYS": json.dumps(keys)})
    proc.start(timeout=120)
    yield proc
    proc.stop()


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    executable = chromium_path()
    with sync_playwright() as p:
        launched = p.chromium.launch(executable_path=executable, args=["--no-sandbox", "--disable-gpu"])
        yield launched
        launched.close()


@pytest.fixture
def page(browser: Browser) -> Iterator[Page]:
    context = browser.new_context(viewport={"width": 1200, "height": 900})
    made = context.new_page()
    made.set_default_timeout(30_000)
    errors: list[str] = []
    made.on("pageerror", lambda exc: errors.append(str(exc)))
    yield made
    context.close()
    assert not errors, f"uncaught errors in the page: {errors}"


def shot(page: Page, folder: Path, name: str) -> None:
    """A full-page screenshot with every photo and thumbnail turned into a flat grey patch: no face is shown."""
    page.evaluate("sel => document.querySelectorAll(sel).forEach(e => e.style.filter = 'contrast(0)')", FACES)
    page.screenshot(path=str(folder / f"{name}.png"), full_page=True)
    page.evaluate("sel => document.querySelectorAll(sel).forEach(e => e.style.filter = '')", FACES)


def drop(page: Page, target: str, files: list[tuple[str, bytes]]) -> None:
    """Drop files on an element the way a file manager does: a `drop` event carrying a DataTransfer."""
    payload = [{"name": name, "b64": base64.b64encode(data).decode()} for name, data in files]
    transfer = page.evaluate_handle(
        """files => {
             const dt = new DataTransfer();
             for (const f of files) {
               const bytes = Uint8Array.from(atob(f.b64), c => c.charCodeAt(0));
               dt.items.add(new File([bytes], f.name, { type: f.name.endsWith('.png') ? 'image/png' : 'image/jpeg' }));
             }
             return dt;
           }""", payload)
    page.dispatch_event(target, "dragover", {"dataTransfer": transfer})
    page.dispatch_event(target, "drop", {"dataTransfer": transfer})


def unlabelled_controls(page: Page) -> list[str]:
    """Visible form controls without an accessible name (a label, aria-label or text)."""
    return page.evaluate("""() => [...document.querySelectorAll('input, select, textarea, button')]
        .filter(e => e.offsetParent !== null && e.type !== 'hidden')
        .filter(e => !(e.labels && e.labels.length) && !e.getAttribute('aria-label') && !e.textContent.trim())
        .map(e => e.outerHTML.slice(0, 120))""")


def overflows(page: Page) -> bool:
    """Whether the page scrolls sideways (the layout does not fit the viewport)."""
    return bool(page.evaluate("() => document.documentElement.scrollWidth > window.innerWidth + 1"))


def sign_in(page: Page, url: str, key: str) -> None:
    page.goto(url + "/ui/")
    field = page.get_by_label("API key")
    field.fill(key)
    field.press("Enter")  # keyboard only
    page.get_by_role("heading", name="Galleries").wait_for()


def photo(lfw: Path, name: str, number: int, label: str) -> tuple[str, bytes]:
    return (f"{label}.jpg", lfw_photo(lfw, name, number).read_bytes())


def test_console_end_to_end(service: ServiceProcess, page: Page, lfw_dir: Path, shots: Path) -> None:
    p = page
    url = service.url
    # / links to the console; the sign-in screen takes a key from the keyboard
    p.goto(url + "/")
    p.get_by_role("link", name="Web console").click()
    p.get_by_label("API key").wait_for()
    assert unlabelled_controls(p) == []
    shot(p, shots, "signin")
    p.get_by_label("API key").fill("not-a-key-at-all")
    p.get_by_role("button", name="Sign in").click()
    p.get_by_text("This key is not known to the service.").wait_for()
    sign_in(p, url, ADMIN_KEY)
    assert "operator · read-write" in p.locator("#who").inner_text()

    # galleries: create one
    p.get_by_label("Gallery name").fill("people")
    p.get_by_role("button", name="Create gallery").click()
    p.get_by_role("heading", name="people").wait_for()
    p.locator("#enrol").wait_for()  # the page has loaded (its heading shows while it loads)
    assert "0 subjects" in p.locator("main").inner_text()

    # enrol two people by drag and drop; refused photos say why before anything is written
    p.get_by_label("Subject id").fill("person-a")
    p.get_by_label("Name", exact=True).fill("Person A")
    drop(p, "#enrol .drop", [photo(lfw_dir, PERSON_A, 1, "a-1"), photo(lfw_dir, PERSON_A, 2, "a-2"),
                             ("empty.png", blank(240, 240)),
                             ("two-people.jpg", side_by_side(lfw_photo(lfw_dir, PERSON_A, 3),
                                                             lfw_photo(lfw_dir, PERSON_B, 3)))])
    previews = p.locator(".preview")
    p.wait_for_function("() => document.querySelectorAll('.preview').length === 4 && [...document.querySelectorAll("
                        "'.preview p')].every(e => !e.textContent.includes('Finding'))")
    texts = [previews.nth(i).inner_text() for i in range(4)]
    assert "One face" in texts[0] and "One face" in texts[1]
    assert "Refused: no face found." in texts[2]
    assert "2 faces" in texts[3]
    assert p.locator(".preview canvas.photo").count() == 4
    commit = p.get_by_role("button", name="Enrol 2 photos")
    shot(p, shots, "enrol")
    commit.click()
    p.get_by_text("2 enrolled, 0 refused.").wait_for()
    assert p.locator(".preview.done").count() == 2

    p.get_by_role("button", name="Clear").click()
    p.get_by_label("Subject id").fill("person-b")
    p.get_by_label("Name", exact=True).fill("Person B")
    drop(p, "#enrol .drop", [photo(lfw_dir, PERSON_B, 1, "b-1"), photo(lfw_dir, PERSON_B, 2, "b-2")])
    p.get_by_role("button", name="Enrol 2 photos").click()
    p.get_by_text("2 enrolled, 0 refused.").wait_for()

    # the gallery page lists both with a thumbnail; search finds by name
    p.get_by_role("link", name="Galleries").click()
    p.get_by_role("link", name="people").click()
    rows = p.locator("#subjects tbody tr")
    rows.first.wait_for()
    assert rows.count() == 2
    assert "person-a" in rows.nth(0).inner_text() and "Person B" in rows.nth(1).inner_text()
    p.wait_for_function("() => [...document.querySelectorAll('#subjects img.thumb')]"
                        ".every(i => i.complete && i.naturalWidth === 112)")
    assert unlabelled_controls(p) == []
    shot(p, shots, "gallery")
    p.get_by_label("Search subjects by id or name").fill("person b")
    p.get_by_label("Search subjects by id or name").press("Enter")
    p.wait_for_function("() => document.querySelectorAll('#subjects tbody tr').length === 1")
    assert "person-b" in rows.first.inner_text()

    # identify a third photo of person A: the right name comes first
    p.get_by_role("link", name="Identify").click()
    p.get_by_label("Gallery").select_option("people")
    drop(p, ".drop", [photo(lfw_dir, PERSON_A, 3, "probe")])
    result = p.locator("#identify-result")
    result.locator("table").first.wait_for()
    first_candidate = result.locator("tbody tr").first.inner_text()
    assert "Person A" in first_candidate and "person-a" in first_candidate
    assert "threshold" in result.inner_text()
    shot(p, shots, "identify")

    # verify a pair of the same person, then of two people
    p.get_by_role("link", name="Verify").click()
    p.set_input_files("#verify-a", files=[_file(lfw_dir, PERSON_A, 1)])
    p.set_input_files("#verify-b", files=[_file(lfw_dir, PERSON_A, 2)])
    p.get_by_role("button", name="Compare").click()
    verdict = p.locator("#verify-result .meter")
    verdict.wait_for()
    assert verdict.inner_text() == "Same person"
    assert "against the threshold" in p.locator("#verify-result").inner_text()
    shot(p, shots, "verify")
    p.set_input_files("#verify-b", files=[_file(lfw_dir, PERSON_B, 2)])
    p.get_by_role("button", name="Compare").click()
    p.wait_for_function("() => document.querySelector('#verify-result .meter')?.textContent === 'Different people'")

    # detect: boxes, sizes and branches of every face
    p.get_by_role("link", name="Detect").click()
    drop(p, ".drop", [("two.jpg", side_by_side(lfw_photo(lfw_dir, PERSON_A, 1), lfw_photo(lfw_dir, PERSON_B, 1)))])
    detected = p.locator("#detect-faces tbody tr")
    detected.first.wait_for()
    assert detected.count() == 2 and "px)" in detected.first.inner_text()
    shot(p, shots, "detect")

    # a subject page: thumbnails, metadata editing, deletion with confirmation
    p.goto(url + "/ui/#/g/people/s/person-b")
    p.get_by_role("heading", name="Person B").wait_for()
    assert p.locator(".face-card").count() == 2
    assert "null" not in p.locator("main").inner_text() and "undefined" not in p.locator("main").inner_text()
    p.get_by_label("Metadata (JSON object)").fill('{"team": "blue"}')
    p.get_by_role("button", name="Save").click()
    p.get_by_text("Saved.").wait_for()
    p.wait_for_function("() => document.querySelectorAll('.face-card img').length === 2 && "
                        "[...document.querySelectorAll('.face-card img')].every(i => i.complete && i.naturalWidth)")
    assert json.loads(p.get_by_label("Metadata (JSON object)").input_value()) == {"team": "blue"}
    shot(p, shots, "subject")
    p.get_by_role("button", name="Delete subject").click()
    dialog = p.locator("dialog#confirm")
    assert "Delete subject Person B and its 2 faces?" in dialog.inner_text()
    dialog.get_by_role("button", name="Delete").click()
    p.get_by_text("Subject person-b deleted.").wait_for()
    p.get_by_role("heading", name="people").wait_for()
    p.wait_for_function("() => document.querySelectorAll('#subjects tbody tr').length === 1")

    # operations: each dependency's readiness
    p.get_by_role("link", name="Operations").click()
    p.get_by_text("Ready", exact=True).wait_for()
    assert "store: ok" in p.locator("#checks").inner_text()
    shot(p, shots, "operations")

    # every screen fits a phone's width
    p.set_viewport_size(NARROW)
    for hash_ in ("#/galleries", "#/g/people", "#/g/people/s/person-a", "#/identify", "#/verify", "#/detect",
                  "#/operations"):
        p.goto(f"{url}/ui/{hash_}")
        p.locator("main h1").wait_for()
        p.wait_for_function("() => !document.querySelector('main')?.textContent.includes('Loading…')")
        assert not overflows(p), f"{hash_} scrolls sideways at {NARROW['width']} px"
        assert unlabelled_controls(p) == [], hash_
    p.goto(f"{url}/ui/#/g/people")
    p.locator("#subjects").wait_for()
    shot(p, shots, "gallery-phone")

    # a gallery is deleted after a confirmation; cancelling keeps it
    p.goto(url + "/ui/#/galleries")
    p.get_by_label("Gallery name").fill("scratch")
    p.get_by_role("button", name="Create gallery").click()
    p.get_by_role("heading", name="scratch").wait_for()
    p.get_by_role("link", name="Galleries").click()
    p.get_by_role("button", name="Delete gallery scratch").click()
    p.locator("dialog#confirm").get_by_role("button", name="Cancel").click()
    assert p.get_by_role("link", name="scratch").is_visible()
    p.get_by_role("button", name="Delete gallery scratch").click()
    assert "Delete gallery scratch with its 0 subjects" in p.locator("dialog#confirm").inner_text()
    p.locator("dialog#confirm").get_by_role("button", name="Delete").click()
    p.get_by_text("Gallery scratch deleted.").wait_for()
    assert p.get_by_role("link", name="scratch").count() == 0
    with service.client(headers={"X-API-Key": ADMIN_KEY}) as admin:
        assert admin.get("/v1/galleries/scratch").status_code == 404

    # sign-out forgets the key
    p.set_viewport_size({"width": 1200, "height": 900})
    p.get_by_role("button", name="Sign out").click()
    p.get_by_label("API key").wait_for()
    assert p.evaluate("() => sessionStorage.getItem('anyface.key')") is None


def _file(lfw: Path, name: str, number: int) -> FilePayload:
    return {"name": f"{name[0].lower()}-{number}.jpg", "mimeType": "image/jpeg",
            "buffer": lfw_photo(lfw, name, number).read_bytes()}


def test_read_only_key_sees_but_cannot_write(service: ServiceProcess, page: Page, lfw_dir: Path,
                                             shots: Path) -> None:
    with service.client(headers={"X-API-Key": ADMIN_KEY}) as admin:
        files = [("images", (f"{i}.jpg", lfw_photo(lfw_dir, PERSON_A, i).read_bytes(), "image/jpeg")) for i in (1, 2)]
        assert admin.post("/v1/galleries/audit/subjects/person-a/faces", files=files,
                          data={"name": "Person A"}).status_code == 201
    p = page
    sign_in(p, service.url, VIEWER_KEY)
    assert "auditor · read-only" in p.locator("#who").inner_text()
    assert p.get_by_role("button", name="Create gallery").is_disabled()
    assert p.get_by_role("button", name="Delete gallery audit").is_disabled()
    p.get_by_role("link", name="audit").click()
    p.locator("#subjects").wait_for()
    assert p.locator("#enrol").count() == 0
    assert "This key may not enrol into this gallery." in p.locator("main").inner_text()
    p.get_by_role("link", name="person-a").click()
    p.get_by_role("heading", name="Person A").wait_for()
    assert p.get_by_role("button", name="Save").is_disabled()
    assert p.get_by_role("button", name="Delete subject").is_disabled()
    assert p.locator(".face-card button").first.is_disabled()
    shot(p, shots, "read-only")
    # and the service itself refuses: the same call the console would make, with the console's key
    status = p.evaluate("""async () => (await fetch('/v1/galleries/audit/subjects/person-a',
        { method: 'DELETE', headers: { 'X-API-Key': sessionStorage.getItem('anyface.key') } })).status""")
    assert status == 403
    assert service.client(headers={"X-API-Key": ADMIN_KEY}).get(
        "/v1/galleries/audit/subjects/person-a").json()["face_count"] == 2

    # a key for some galleries sees only those, and may write there
    p.get_by_role("button", name="Sign out").click()
    sign_in(p, service.url, SCOPED_KEY)
    assert "galleries: audit" in p.locator("#who").inner_text()
    listed = [p.locator("main tbody tr td a").nth(i).inner_text() for i in range(p.locator("main tbody tr").count())]
    assert listed == ["audit"]
    assert p.get_by_role("button", name="Delete gallery audit").is_enabled()
    p.get_by_role("link", name="audit").click()
    p.locator("#enrol").wait_for()


def test_gallery_of_ten_thousand_subjects(model_dir: Path, browser: Browser, tmp_path: Path, shots: Path,
                                         service_factory: type[ServiceProcess]) -> None:
    """Paging and searching stay quick on 10,000 subjects (the figures are printed; docs/console.md has them)."""
    path = tmp_path / "big.sqlite3"
    from service.gallery.sqlite_store import SqliteStore

    SqliteStore(path).close()  # the schema
    rng = np.random.default_rng(0)
    vectors = rng.standard_normal((10_000, 128)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    now = time.time()
    with sqlite3.connect(path) as db:
        db.execute("INSERT INTO galleries(name, created_at, embedder) VALUES ('big', ?, NULL)", (now,))
        db.executemany("INSERT INTO subjects(gallery, subject_id, name, metadata, created_at, updated_at)"
                       " VALUES ('big', ?, ?, '{}', ?, ?)",
                       [(f"subject-{i:05d}", f"Person {i}", now, now) for i in range(10_000)])
        db.executemany("INSERT INTO faces(gallery, subject_id, embedding, box, branch, created_at)"
                       " VALUES ('big', ?, ?, NULL, '112', ?)",
                       [(f"subject-{i:05d}", vectors[i].tobytes(), now) for i in range(10_000)])
    service = service_factory({"ANYFACE_STORE": f"sqlite:///{path}"}).start(timeout=120)
    context = browser.new_context(viewport={"width": 1200, "height": 900})
    p = context.new_page()
    timings: dict[str, float] = {}

    def timed(name: str, action: object, condition: str) -> None:
        start = time.perf_counter()
        action()  # type: ignore[operator]
        p.wait_for_function(condition)
        timings[name] = round(time.perf_counter() - start, 3)

    timed("open gallery (page 1 of 200)", lambda: p.goto(service.url + "/ui/#/g/big"),
          "() => document.querySelectorAll('#subjects tbody tr').length === 50")
    assert "10000 subjects" in p.locator("main").inner_text()
    assert p.locator("#subjects tbody tr td.code").first.inner_text() == "subject-00000"
    timed("next page", lambda: p.get_by_role("link", name="Next →").click(),
          "() => document.querySelector('#subjects tbody tr td.code')?.textContent === 'subject-00050'")
    timed("previous page", lambda: p.get_by_role("link", name="← Previous").click(),
          "() => document.querySelector('#subjects tbody tr td.code')?.textContent === 'subject-00000'")
    search = p.get_by_label("Search subjects by id or name")
    search.fill("person 9876")
    timed("search by name", lambda: search.press("Enter"),
          "() => document.querySelectorAll('#subjects tbody tr').length === 1")
    assert "subject-09876" in p.locator("#subjects tbody tr").first.inner_text()
    context.close()
    print("console on 10,000 subjects, seconds:", json.dumps(timings))
    (shots / "ten-thousand.json").write_text(json.dumps(timings, indent=2) + "\n")
