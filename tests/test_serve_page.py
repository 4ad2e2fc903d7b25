"""The page at `/` in headless Chromium: upload an image, the drawn prediction appears.

Needs Debian's `chromium` and `chromium-driver` (apt-get install -y chromium chromium-driver) and
the `selenium` package (dev extra); skipped with the reason when any is missing.
"""
import shutil
import tempfile

import numpy as np
import pytest

pytest.importorskip("kserve", reason="the serve extra (KServe's model server) is not installed")
webdriver = pytest.importorskip("selenium.webdriver", reason="selenium (dev extra) is not installed")
cv2 = pytest.importorskip("cv2")

from test_serve import FakeDetector, Server  # noqa: E402

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
DRIVER = shutil.which("chromedriver")
pytestmark = pytest.mark.skipif(not (CHROMIUM and DRIVER),
                                reason="headless Chromium test needs `chromium` and `chromedriver` on PATH "
                                       "(apt-get install -y chromium chromium-driver)")


@pytest.fixture
def browser(tmp_path):
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 f"--user-data-dir={tempfile.mkdtemp(dir=tmp_path)}"):
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(DRIVER), options=options)
    driver.set_page_load_timeout(30)
    yield driver
    driver.quit()


def wait_for(driver, condition, timeout=30):
    from selenium.webdriver.support.ui import WebDriverWait

    return WebDriverWait(driver, timeout).until(lambda d: condition(d))


def test_upload_shows_the_drawn_prediction(browser, tmp_path):
    from selenium.webdriver.common.by import By

    image = tmp_path / "photo.png"
    cv2.imwrite(str(image), np.full((60, 80, 3), 200, np.uint8))
    with Server({"det": FakeDetector()}) as s:
        browser.get(f"http://{s.url}/")
        wait_for(browser, lambda d: d.find_element(By.ID, "model").get_attribute("value") == "det")
        browser.find_element(By.ID, "file").send_keys(str(image))
        browser.find_element(By.ID, "run").click()
        wait_for(browser, lambda d: d.find_element(By.ID, "status").text.startswith("Done"))
        size = browser.execute_script("const i = document.getElementById('result'); return [i.naturalWidth, i.naturalHeight];")
        status = browser.find_element(By.ID, "status").text
        # The drawing: the server's PNG of the uploaded image with the box on it.
        png = browser.execute_script("""
            const i = document.getElementById('result'), c = document.createElement('canvas');
            c.width = i.naturalWidth; c.height = i.naturalHeight;
            const g = c.getContext('2d'); g.drawImage(i, 0, 0);
            return Array.from(g.getImageData(0, 0, c.width, c.height).data.slice(0, 4));""")
    assert size == [80, 60]
    assert "1 detections" in status
    assert png[:3] != [200, 200, 200]  # the corner pixel lies on the drawn box's edge


def test_an_undecodable_upload_shows_the_error(browser, tmp_path):
    from selenium.webdriver.common.by import By

    bad = tmp_path / "broken.png"
    bad.write_bytes(b"not an image at all")
    with Server({"det": FakeDetector()}) as s:
        browser.get(f"http://{s.url}/")
        wait_for(browser, lambda d: d.find_element(By.ID, "model").get_attribute("value") == "det")
        browser.find_element(By.ID, "file").send_keys(str(bad))
        browser.find_element(By.ID, "run").click()
        wait_for(browser, lambda d: d.find_element(By.ID, "status").text.startswith("Error"))
        assert "400" in browser.find_element(By.ID, "status").text
        assert "decodable" in browser.find_element(By.ID, "status").text
