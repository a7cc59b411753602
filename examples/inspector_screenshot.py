"""Screenshot of the inspector page (``/ui``) for a trained run: the image in docs/inspector.md.

    python examples/inspector_screenshot.py runs/demo docs/img/inspector.png [--user USER_ID]

Starts ``conrec serve`` on 127.0.0.1 (a free port) for the run, opens ``/ui`` in headless Debian
Chromium through Selenium and the system chromedriver (nothing is downloaded), opens the first
evaluation point of ``--user`` (default: among the first 50 points with at most 30 held-out future
dislikes and at least 3 past ones (so the explanations have something to cite), the one whose
lists have the most hits), builds a five-item slate from the first catalogue search hits of ``--search``,
scores it at a threshold, and saves a full-page PNG. Needs ``apt-get install chromium
chromium-driver`` and ``pip install -e .[test]`` (selenium).
"""

from __future__ import annotations

import argparse
import statistics
from pathlib import Path
from typing import Any

import httpx
from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import WebDriverWait

from conrec.config import load_config
from conrec.serve.local import local_server


def hits(url: str, point: dict[str, Any]) -> int:
    """Hits over the eval run's lists for ``point`` (-1 with under 3 past dislikes: nothing to explain)."""
    view = httpx.get(f"{url}/ui/api/points/{point['sample_id']}", timeout=60).json()
    if sum(e["feedback"] < 0 for e in view["history"]) < 3:
        return -1
    return sum(it["hit"] for m in view["lists"] for it in m["items"])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("run_dir", type=Path)
    ap.add_argument("out", type=Path)
    ap.add_argument("--user", default=None, help="user id to open (default: see above)")
    ap.add_argument("--search", default="the", help="catalogue search whose first hits make the slate")
    ap.add_argument("--width", type=int, default=1500)
    args = ap.parse_args()

    cfg_path = args.run_dir / "config.yaml"
    cfg = load_config(cfg_path if cfg_path.exists() else None, {"run_dir": str(args.run_dir)})
    cfg = cfg.model_copy(update={"serve": cfg.serve.model_copy(update={"log_level": "warning", "access_log": False})})
    with local_server(cfg, startup_timeout=600) as server:
        points = httpx.get(f"{server.url}/ui/api/points", params={"user": args.user or "", "limit": 50}, timeout=60).json()["points"]
        if not points:
            raise SystemExit(f"no evaluation point for user {args.user!r}")
        point = points[0] if args.user else max((p for p in points if p["n_future"] <= 30), key=lambda p: hits(server.url, p))
        opts = webdriver.ChromeOptions()
        opts.binary_location = "/usr/bin/chromium"
        for a in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", f"--window-size={args.width},1200"):
            opts.add_argument(a)
        driver = webdriver.Chrome(service=Service("/usr/bin/chromedriver"), options=opts)
        try:
            wait = WebDriverWait(driver, 300)
            driver.get(f"{server.url}/ui")
            wait.until(lambda d: d.find_element(By.ID, "points-hint").text)
            driver.find_element(By.ID, "user-query").send_keys(point["user_id"])
            driver.find_element(By.CSS_SELECTOR, "#user-form button[type=submit]").click()
            wait.until(lambda d: d.find_elements(By.CSS_SELECTOR, f"#user-results li[data-sample='{point['sample_id']}'] button"))[0].click()
            wait.until(lambda d: d.find_elements(By.CSS_SELECTOR, "#lists .model-list[data-kind=live] li[data-item]"))
            driver.find_element(By.ID, "search-q").send_keys(args.search)
            driver.find_element(By.CSS_SELECTOR, "#search-form button").click()
            adds = wait.until(lambda d: d.find_elements(By.CSS_SELECTOR, "#search-results button.add"))
            for b in adds[:5]:
                b.click()
            driver.find_element(By.ID, "score-button").click()
            wait.until(lambda d: d.find_elements(By.CSS_SELECTOR, "#scores tbody tr"))
            scores = [float(td.get_attribute("data-score")) for td in driver.find_elements(By.CSS_SELECTOR, "#scores td.score") if td.get_attribute("data-score")]
            if scores:  # a threshold that filters about half the slate shows both decisions
                driver.find_element(By.ID, "threshold").send_keys(f"{statistics.median(scores):.4f}")
                driver.find_element(By.ID, "score-button").click()
                wait.until(lambda d: d.find_elements(By.CSS_SELECTOR, "#scores td.decision .badge"))
            # open the first "why" of the live list, so the explanations show in the picture
            driver.find_element(By.CSS_SELECTOR, "#lists .model-list[data-kind=live] details summary").click()
            height = driver.execute_script("return document.documentElement.scrollHeight")
            driver.set_window_size(args.width, int(height) + 40)
            driver.execute_script("window.scrollTo(0, 0)")
            args.out.parent.mkdir(parents=True, exist_ok=True)
            tmp = args.out.with_suffix(".tmp.png")
            driver.save_screenshot(str(tmp))
            tmp.replace(args.out)
            print(f"{args.out}: user {point['user_id']}, point {point['sample_id']}, {args.width}x{height}")
        finally:
            driver.quit()


if __name__ == "__main__":
    main()
