"""`make ui-check`: what a researcher sees in the MLflow UI, proved in a real browser.

Trains a default run and a two-job sweep into a fresh store, starts `mlflow ui` on a free loopback
port, and drives headless Chromium (Debian's `chromium` package) over the DevTools protocol on a
pipe, so that no other package is needed. It saves four screenshots in docs/ui/ (the README shows
them) and checks the rendered DOM (`chromium --dump-dom`) for the runs table and the sweep parent's
comparison. Any failed check ends it with exit status 1 and says which.

    .venv/bin/python docs/ui_check.py [--keep DIR]

With --keep, the store, the server's log and the DOM dumps stay in DIR, and a DIR that already holds
a store is checked again without training.
"""

from __future__ import annotations

import argparse
import base64
import html
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from mlflow import MlflowClient
from mlflow.entities import Run

ROOT = Path(__file__).resolve().parents[1]
SHOTS = ROOT / "docs" / "ui"
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
# MLflow 3.17's UI opens an experiment on its GenAI overview unless the browser chose "Model training"
# (stored in its localStorage) or the URL says so: the link `make ui` prints carries this.
MODEL_TRAINING = "workflowType=machine_learning"
SWEEP = ["hidden_dim=32,64", "epochs=3"]
TIMEOUT_S = 60


class Failed(Exception):
    """A check that did not hold: what was expected, and what the page showed."""


# ---------------------------------------------------------------------- the store
def train(store: Path) -> None:
    """A default run and a small sweep, as `make run` and `python -m rnnexp.run ... -m` make them."""
    common = [f"tracking_uri=sqlite:///{store}/mlflow.db", f"train.checkpoint_dir={store}/checkpoints"]
    env = {**os.environ, "MLFLOW_SYSTEM_METRICS_SAMPLING_INTERVAL": "2"}  # short runs: samples to chart
    for args in ([*common, f"hydra.run.dir={store}/hydra"], ["-m", *SWEEP, *common, f"hydra.sweep.dir={store}/sweep"]):
        print("training:", "python -m rnnexp.run", " ".join(args), flush=True)
        subprocess.run(
            [sys.executable, "-m", "rnnexp.run", *args], cwd=store, env=env, check=True, stdout=subprocess.DEVNULL
        )


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@contextmanager
def mlflow_ui(store: Path) -> Iterator[str]:
    """`mlflow ui` over the store on a free loopback port, stopped afterwards."""
    port = free_port()
    log = open(store / "mlflow_ui.log", "w")
    server = subprocess.Popen(
        [
            str(Path(sys.executable).with_name("mlflow")),
            "ui",
            "--backend-store-uri",
            f"sqlite:///{store}/mlflow.db",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--workers",
            "1",
        ],
        cwd=store,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + TIMEOUT_S
        while True:
            try:
                with urllib.request.urlopen(f"{url}/health", timeout=2):
                    break
            except OSError:
                if time.monotonic() > deadline or server.poll() is not None:
                    raise Failed(f"mlflow ui did not answer on {url}: see {store / 'mlflow_ui.log'}") from None
                time.sleep(0.5)
        yield url
    finally:
        os.killpg(server.pid, signal.SIGTERM)  # the server and the workers and job runners it started
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
        deadline = time.monotonic() + TIMEOUT_S
        while not self.evaluate(f"Boolean({ready})"):
            if time.monotonic() > deadline:
                raise Failed(
                    f"{url} never showed {ready}; it showed: {self.evaluate('document.body.innerText')[:500]!r}"
                )
            time.sleep(0.25)
        time.sleep(settle_s)

    def click(self, text: str) -> None:
        """Click the button whose text is `text`, as a user would."""
        found = self.evaluate(
            "(() => { const b = Array.from(document.querySelectorAll('button'))"
            f".find(b => b.innerText.trim() === {json.dumps(text)}); if (b) b.click(); return !!b }})()"
        )
        if not found:
            raise Failed(f"no button {text!r} on {self.evaluate('location.href')}")
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
        print(f"screenshot: {path.relative_to(ROOT)}")

    def close(self) -> None:
        self.process.terminate()
        self.process.wait(timeout=30)


def dump_dom(url: str, profile: Path) -> str:
    """The DOM after the page's scripts ran, as `chromium --dump-dom` prints it."""
    result = subprocess.run(
        ["chromium", *CHROMIUM_FLAGS, f"--user-data-dir={profile}", "--virtual-time-budget=15000", "--dump-dom", url],
        capture_output=True,
        text=True,
        timeout=TIMEOUT_S * 2,
    )
    return result.stdout


def text_of(dom: str) -> str:
    """The visible text of a DOM, whitespace collapsed."""
    body = re.sub(r"<(script|style)\b.*?</\1>", " ", dom, flags=re.S)
    return re.sub(r"\s+", " ", html.unescape(re.sub(r"<[^>]+>", " ", body)))


def check(condition: bool, what: str) -> None:
    if not condition:
        raise Failed(what)
    print(f"ok: {what}")


# ---------------------------------------------------------------------- the pages
def runs(client: MlflowClient) -> tuple[str, Run, Run, list[Run]]:
    """The experiment id, the default run, the sweep's parent and its children best first."""
    experiment = client.get_experiment_by_name("rnnexp")
    found = client.search_runs([experiment.experiment_id])
    (parent,) = [run for run in found if run.data.tags.get("sweep") == "true"]
    (default,) = [run for run in found if run.info.run_name == "default"]
    children = [run for run in found if run.data.tags.get("mlflow.parentRunId") == parent.info.run_id]
    return experiment.experiment_id, default, parent, sorted(children, key=lambda run: run.data.metrics["best_val_ppl"])


def expand_sweep(browser: Browser, experiment: str, parent: Run) -> None:
    """Open the sweep's row in the runs table, and show the headline columns, through the page state
    the UI keeps in localStorage (what clicking its row toggle and column picker stores)."""
    key = f'MLflowLocalStorage-1.1-ExperimentPage-["{experiment}"]-ReactComponentState'
    state = json.loads(browser.evaluate(f"localStorage.getItem({json.dumps(key)})") or "{}")
    state["runsExpanded"] = {parent.info.run_id: True}
    state["selectedColumns"] = [
        "metrics.`best_val_ppl`",
        "metrics.`test_ppl`",
        "params.`model.hidden_dim`",
        "attributes.`Dataset`",
        "attributes.`Models`",
    ]
    browser.evaluate(f"localStorage.setItem({json.dumps(key)}, {json.dumps(json.dumps(state))})")


def ui_check(store: Path) -> None:
    client = MlflowClient(f"sqlite:///{store}/mlflow.db")
    experiment, default, parent, children = runs(client)
    check(
        client.get_experiment(experiment).tags.get("mlflow.experimentKind") == "custom_model_development",
        "the experiment is tagged mlflow.experimentKind=custom_model_development",
    )
    SHOTS.mkdir(parents=True, exist_ok=True)
    with mlflow_ui(store) as url:
        base = f"{url}/#/experiments/{experiment}"
        browser = Browser(store / "chromium-profile")
        try:
            browser.open(f"{url}/#/experiments", "document.body.innerText.includes('rnnexp')")
            browser.evaluate(
                "localStorage.setItem('mlflow.assistant.panelOpen_v1', 'false');"
                "localStorage.setItem('mlflow.assistant.fab.autoOpenedOnFirstLoad_v1', 'true')"
            )
            browser.open(
                f"{base}?{MODEL_TRAINING}",
                "location.hash.includes('/runs')"
                f" && document.body.innerText.includes({json.dumps(default.info.run_name)})",
            )
            check("/runs" in browser.evaluate("location.hash"), "the experiment opens on its runs (Model training)")
            browser.screenshot(SHOTS / "landing.png")
            expand_sweep(browser, experiment, parent)
            browser.open(
                f"{base}/runs?{MODEL_TRAINING}",
                " && ".join(f"document.body.innerText.includes({json.dumps(run.info.run_name)})" for run in children),
            )
            browser.screenshot(SHOTS / "runs_sweep_expanded.png")
            browser.open(f"{base}/runs/{parent.info.run_id}?{MODEL_TRAINING}", "document.querySelector('table a')")
            browser.click("Show more")  # the UI folds a long description
            browser.screenshot(SHOTS / "sweep_parent_overview.png")
            best = children[0]
            browser.open(
                f"{base}/runs/{best.info.run_id}/model-metrics?{MODEL_TRAINING}",
                "document.body.innerText.includes('Model metrics')"
                " && document.querySelectorAll('svg.main-svg').length > 2",
                settle_s=3,
            )
            # MLflow 3.17 puts sections with a prefix (diagnostics/) above its "Model metrics" section:
            # the headline charts are the first of that section.
            browser.scroll_to("Model metrics")
            browser.screenshot(SHOTS / "child_charts.png")
        finally:
            browser.close()
        check_dom(url, experiment, store, default, parent, children)


def check_dom(url: str, experiment: str, store: Path, default: Run, parent: Run, children: list[Run]) -> None:
    """The runs table and the parent's comparison, read from `chromium --dump-dom`."""
    table = dump_dom(f"{url}/#/experiments/{experiment}/runs?{MODEL_TRAINING}", store / "dom-profile-runs")
    (store / "runs_table.html").write_text(table)
    shown = text_of(table)
    check(
        "Run Name" in shown and default.info.run_name in shown and parent.info.run_name[:40] in shown,
        f"the runs table lists the default run ({default.info.run_name!r}) and the sweep's parent",
    )
    overview = dump_dom(
        f"{url}/#/experiments/{experiment}/runs/{parent.info.run_id}?{MODEL_TRAINING}", store / "dom-profile-parent"
    )
    (store / "parent_overview.html").write_text(overview)
    links = re.findall(r'href="#/experiments/\d+/runs/([0-9a-f]{32})"', overview)
    order = [run_id for run_id in dict.fromkeys(links) if run_id in {c.info.run_id for c in children}]
    check(
        order == [run.info.run_id for run in children],
        "the parent's description renders the comparison: each child linked, best validation perplexity first",
    )
    shown = text_of(overview)
    best = children[0].data.metrics["best_val_ppl"]
    check(
        f"{best:.3f}" in shown and "best val ppl" in shown and "32, 64" in shown,
        "the parent shows the best child's best_val_ppl, the table's columns and the swept values 32, 64",
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--keep", type=Path, help="keep the store, server log and DOM dumps in this folder (reused if it holds a store)"
    )
    args = parser.parse_args()
    if shutil.which("chromium") is None:
        sys.exit("error: chromium is not installed: apt-get install -y chromium (Debian's package), then run again.")
    store = args.keep.resolve() if args.keep else Path(tempfile.mkdtemp(prefix="rnnexp-ui-"))
    store.mkdir(parents=True, exist_ok=True)
    try:
        if not (store / "mlflow.db").exists():
            train(store)
        ui_check(store)
    except (Failed, subprocess.CalledProcessError) as err:
        sys.exit(f"error: ui-check failed: {err} (store kept in {store})")
    if not args.keep:
        shutil.rmtree(store)
    print(f"ui-check passed: screenshots in {SHOTS.relative_to(ROOT)}/")


if __name__ == "__main__":
    main()
