"""`make ui-check`: what `make ui` opens, in a fresh browser with nothing staged.

Trains a default run and a two-job sweep into a fresh store, starts `make ui` over it on a free
loopback port, and opens the URL `make ui` prints in headless Chromium (Debian's `chromium` package,
driven over the DevTools protocol on a pipe, so no other package is needed) with a new profile:
nothing is written to the browser's storage and nothing is set in the page before it loads. It
checks what the page shows (the runs table under "Model training", the metric and param columns,
the sort by best_val_ppl), then clicks as a researcher would: the sweep's parent, its "Show more",
and the best child's "Model metrics". Any failed check ends it with exit status 1 and says which.

    .venv/bin/python docs/ui_check.py [--keep DIR] [--refresh-docs]

Screenshots go to a new folder in /tmp, or to docs/ui/ (which the README shows) with --refresh-docs.
With --keep, the store and the server's log stay in DIR, and a DIR that already holds a store is
checked again without training.
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.parse
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from mlflow import MlflowClient
from mlflow.entities import Run

ROOT = Path(__file__).resolve().parents[1]
DOCS_SHOTS = ROOT / "docs" / "ui"
WINDOW = (1600, 1000)
CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--hide-scrollbars",
    f"--window-size={WINDOW[0]},{WINDOW[1]}",
]
SWEEP = ["model.hidden_dim=32,64", "train.epochs=3"]
TIMEOUT_S = 90


class Failed(Exception):
    """A check that did not hold: what was expected, and what the page showed."""


# ---------------------------------------------------------------------- the store
def train(store: Path) -> None:
    """A default run and a small sweep, as `make run` and `python -m rnnexp.run ... -m` make them."""
    common = [f"tracking_uri=sqlite:///{store}/mlflow.db", f"train.checkpoint_dir={store}/checkpoints"]
    for args in ([*common, f"hydra.run.dir={store}/hydra"], ["-m", *SWEEP, *common, f"hydra.sweep.dir={store}/sweep"]):
        print("training:", "python -m rnnexp.run", " ".join(args), flush=True)
        subprocess.run([sys.executable, "-m", "rnnexp.run", *args], cwd=store, check=True, stdout=subprocess.DEVNULL)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@contextmanager
def make_ui(store: Path) -> Iterator[str]:
    """`make ui` over the store on a free loopback port; yields the URL it printed, once the server answers."""
    port = free_port()
    log_path = store / "make_ui.log"
    log = open(log_path, "w")
    server = subprocess.Popen(
        # -o: never reinstall the environment from here, whatever the stamp's age
        ["make", "-s", "-o", ".venv/.installed", "ui", f"UI_STORE=sqlite:///{store}/mlflow.db", f"UI_PORT={port}"],
        cwd=ROOT,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    try:
        deadline = time.monotonic() + TIMEOUT_S
        while True:
            printed = [line for line in log_path.read_text().splitlines() if line.startswith("http://")]
            try:
                if printed:
                    with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2):
                        break
            except OSError:
                pass
            if time.monotonic() > deadline or server.poll() is not None:
                raise Failed(f"make ui did not print a URL and answer on port {port}: see {log_path}")
            time.sleep(0.5)
        yield printed[0]
    finally:
        os.killpg(server.pid, signal.SIGTERM)  # make, and the server it started
        server.wait(timeout=TIMEOUT_S)
        log.close()


# ---------------------------------------------------------------------- the browser
class Browser:
    """Headless Chromium driven over the DevTools protocol on a pipe (fd 3 in, fd 4 out, NUL-separated JSON)."""

    def __init__(self, profile: Path):
        commands_in, self._commands = os.pipe()
        self._replies, replies_out = os.pipe()
        flags = " ".join([*CHROMIUM_FLAGS, f"--user-data-dir={profile}", "--remote-debugging-pipe"])
        self.process = subprocess.Popen(
            ["bash", "-c", f"exec chromium {flags} 3<&{commands_in} 4>&{replies_out}"],
            pass_fds=(commands_in, replies_out),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        os.close(commands_in)
        os.close(replies_out)
        self._buffer, self._id = b"", 0
        target = self.send("Target.createTarget", {"url": "about:blank"})["targetId"]
        self.session = self.send("Target.attachToTarget", {"targetId": target, "flatten": True})["sessionId"]
        self.send(
            "Emulation.setDeviceMetricsOverride",
            {"width": WINDOW[0], "height": WINDOW[1], "deviceScaleFactor": 1, "mobile": False},
            self.session,
        )

    def send(self, method: str, params: dict | None = None, session: str | None = None) -> dict:
        self._id += 1
        message = {
            "id": self._id,
            "method": method,
            "params": params or {},
            **({"sessionId": session} if session else {}),
        }
        os.write(self._commands, json.dumps(message).encode() + b"\0")
        while True:
            while b"\0" not in self._buffer:
                chunk = os.read(self._replies, 1 << 20)
                if not chunk:
                    raise Failed("chromium closed its DevTools pipe")
                self._buffer += chunk
            raw, self._buffer = self._buffer.split(b"\0", 1)
            reply = json.loads(raw)
            if reply.get("id") == self._id:
                if "error" in reply:
                    raise Failed(f"chromium: {method}: {reply['error']}")
                return reply["result"]

    def evaluate(self, expression: str):
        result = self.send("Runtime.evaluate", {"expression": expression, "returnByValue": True}, self.session)
        return result["result"].get("value")

    def open(self, url: str, ready: str, settle_s: float = 1.5) -> None:
        """Load `url` afresh (not as a hash change inside the running page, which would keep the page's
        state) and wait until the JavaScript condition `ready` holds, then for the page to settle."""
        self.send("Page.navigate", {"url": "about:blank"}, self.session)
        self.send("Page.navigate", {"url": url}, self.session)
        wait_for(self, ready, settle_s)

    def click(self, text: str, selector: str = "button") -> None:
        """Click the element (`selector`) whose text is `text` with the mouse, as a user would: some of
        MLflow's controls (its tabs) answer the mouse press, not a scripted click()."""
        box = self.evaluate(
            f"(() => {{ const e = Array.from(document.querySelectorAll({json.dumps(selector)}))"
            f".find(e => e.innerText.trim() === {json.dumps(text)}); if (!e) return null;"
            " e.scrollIntoView({block: 'center'}); const r = e.getBoundingClientRect();"
            " return [r.x + r.width / 2, r.y + r.height / 2] })()"
        )
        if not box:
            raise Failed(f"no {selector} {text!r} on {self.evaluate('location.href')}")
        for kind in ("mousePressed", "mouseReleased"):
            self.send(
                "Input.dispatchMouseEvent",
                {"type": kind, "x": box[0], "y": box[1], "button": "left", "clickCount": 1},
                self.session,
            )
        time.sleep(1)

    def scroll_to(self, text: str) -> None:
        """Scroll the last element that reads exactly `text` (a section's header, not the tab of that name)
        to the top of the view."""
        found = self.evaluate(
            "(() => { const e = Array.from(document.querySelectorAll('body *'))"
            f".filter(e => e.childElementCount === 0 && e.innerText?.trim() === {json.dumps(text)})"
            ".pop(); if (e) e.scrollIntoView({block: 'start'}); return !!e })()"
        )
        if not found:
            raise Failed(f"no {text!r} on {self.evaluate('location.href')}")
        self.settle("document.querySelectorAll('svg.main-svg').length")

    def settle(self, measure: str, quiet_s: float = 2.0) -> None:
        """Wait until the JavaScript number `measure` (charts drawn, say) stops changing: charts load lazily."""
        last, since, deadline = None, time.monotonic(), time.monotonic() + TIMEOUT_S
        while time.monotonic() < deadline:
            now = self.evaluate(measure)
            if now != last:
                last, since = now, time.monotonic()
            elif time.monotonic() - since >= quiet_s:
                return
            time.sleep(0.25)

    def screenshot(self, path: Path) -> None:
        data = self.send("Page.captureScreenshot", {"format": "png"}, self.session)["data"]
        path.write_bytes(base64.b64decode(data))
        print(f"screenshot: {path}")

    def close(self) -> None:
        self.process.terminate()
        self.process.wait(timeout=30)


def check(condition: bool, what: str) -> None:
    if not condition:
        raise Failed(what)
    print(f"ok: {what}")


# ---------------------------------------------------------------------- the pages
def runs(client: MlflowClient) -> tuple[Run, Run, list[Run]]:
    """The default run, the sweep's parent and its children best first."""
    experiment = client.get_experiment_by_name("rnnexp")
    found = client.search_runs([experiment.experiment_id])
    (parent,) = [run for run in found if run.data.tags.get("sweep") == "true"]
    children = [run for run in found if run.data.tags.get("mlflow.parentRunId") == parent.info.run_id]
    (default,) = [run for run in found if run not in children and run != parent]
    return default, parent, sorted(children, key=lambda run: run.data.metrics["best_val_ppl"])


def table_rows(browser: Browser) -> list[str]:
    """The run names down the runs table, top first (the grid draws rows in any DOM order)."""
    rows = browser.evaluate(
        "JSON.stringify(Array.from(document.querySelectorAll('.ag-pinned-left-cols-container .ag-row'))"
        ".map(r => [Number(r.getAttribute('row-index')), r.querySelector('a')?.innerText.trim()]))"
    )
    return [name for _, name in sorted(json.loads(rows))]


def wait_for(browser: Browser, ready: str, settle_s: float = 1.5) -> None:
    """Wait until the JavaScript condition `ready` holds, then for the page to settle."""
    deadline = time.monotonic() + TIMEOUT_S
    while not browser.evaluate(f"Boolean({ready})"):
        if time.monotonic() > deadline:
            raise Failed(
                f"never showed {ready}; the page showed: {browser.evaluate('document.body.innerText')[:500]!r}"
            )
        time.sleep(0.25)
    time.sleep(settle_s)


def ui_check(store: Path, shots: Path) -> None:
    client = MlflowClient(f"sqlite:///{store}/mlflow.db")
    default, parent, children = runs(client)
    every = [default, parent, *children]
    with make_ui(store) as url:
        print(f"make ui printed: {url}")
        browser = Browser(store / f"chromium-profile-{time.time_ns()}")  # new: nothing stored from before
        try:
            browser.open(
                url, " && ".join(f"document.body.innerText.includes({json.dumps(r.info.run_name)})" for r in every)
            )
            shown = browser.evaluate("document.body.innerText")
            check(
                "/runs?" in browser.evaluate("location.hash") and "workflowType=machine_learning" in url.split("#")[1],
                "the URL opens the experiment's runs table, workflowType=machine_learning inside the hash",
            )
            check(
                "Evaluation runs" not in shown and "Model training" in shown,
                "the side menu is \"Model training\"'s (Runs, Models, Traces), not GenAI's",
            )
            headers = json.loads(
                browser.evaluate(
                    "JSON.stringify(Array.from(document.querySelectorAll('.ag-header-cell'))"
                    ".map(e => e.innerText.trim()))"
                )
            )
            wanted = ["best_val_ppl", "test_ppl", "model.hidden_dim", "optim.lr"]
            check(set(wanted) <= set(headers), f"the table shows the columns {', '.join(wanted)} (it shows {headers})")
            order = table_rows(browser)
            best = {run.info.run_name: run.data.metrics["best_val_ppl"] for run in every}
            check(
                sorted(order) == sorted(best)
                and [best[name] for name in order] == sorted(best.values())
                and "Sort: best_val_ppl" in shown,
                f"every run is listed, sorted by best_val_ppl, best first: {order}",
            )
            browser.screenshot(shots / "landing.png")

            browser.click(parent.info.run_name, "a")
            wait_for(browser, "document.body.innerText.includes('Show more')")
            browser.click("Show more")  # the UI folds a long description
            links = json.loads(
                browser.evaluate(
                    "JSON.stringify(Array.from(document.querySelectorAll('a')).map(a => a.getAttribute('href')))"
                )
            )
            linked = [run.info.run_id for run in children if any(h and h.endswith(run.info.run_id) for h in links)]
            shown = browser.evaluate("document.body.innerText")
            check(
                linked == [run.info.run_id for run in children]
                and f"{children[0].data.metrics['best_val_ppl']:.3f}" in shown
                and "32, 64" in shown,
                "the sweep's parent describes the comparison: each child linked, the best's best_val_ppl, 32, 64",
            )
            browser.screenshot(shots / "sweep_parent_overview.png")

            # The description's links open a new tab: the same profile loading the link's address.
            link = next(h for h in links if h and h.endswith(children[0].info.run_id))
            browser.open(urllib.parse.urljoin(url, link), "document.body.innerText.includes('Model metrics')")
            browser.click("Model metrics")
            wait_for(browser, "document.querySelectorAll('svg.main-svg').length > 2")
            # MLflow 3.17 puts sections with a prefix (diagnostics/) above its "Model metrics" section:
            # the headline charts are the first of that section.
            browser.scroll_to("Model metrics")
            browser.screenshot(shots / "child_charts.png")
        finally:
            browser.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--keep", type=Path, help="keep the store and the server's log in this folder (reused if it holds a store)"
    )
    parser.add_argument("--refresh-docs", action="store_true", help="write the screenshots to docs/ui/")
    args = parser.parse_args()
    if shutil.which("chromium") is None:
        sys.exit("error: chromium is not installed: apt-get install -y chromium (Debian's package), then run again.")
    store = args.keep.resolve() if args.keep else Path(tempfile.mkdtemp(prefix="rnnexp-ui-"))
    store.mkdir(parents=True, exist_ok=True)
    shots = DOCS_SHOTS if args.refresh_docs else Path(tempfile.mkdtemp(prefix="rnnexp-ui-shots-"))
    shots.mkdir(parents=True, exist_ok=True)
    try:
        if not (store / "mlflow.db").exists():
            train(store)
        ui_check(store, shots)
    except (Failed, subprocess.CalledProcessError) as err:
        sys.exit(f"error: ui-check failed: {err} (store kept in {store})")
    if not args.keep:
        shutil.rmtree(store)
    print(f"ui-check passed: screenshots in {shots}/")


if __name__ == "__main__":
    main()
