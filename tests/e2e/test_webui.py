"""The web UI in headless Chromium: type a message, watch the answer stream in, see the cluster
view, save a screenshot.

Chromium and the exo-node server run inside a network namespace this test creates (loopback
only), so the browser cannot reach anything but the node. The browser is driven over the DevTools
protocol by this same file run as a script inside the namespace (`python test_webui.py drive`).
"""
import base64
import json
import os
import pathlib
import re
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.request

import pytest

HERE = pathlib.Path(__file__).resolve()


def artifacts_dir(binary):
    path = os.environ.get("EXO_TEST_ARTIFACTS") or str(pathlib.Path(binary).parent / "test-artifacts")
    os.makedirs(path, exist_ok=True)
    return path


def test_webui_chat_streams_and_shows_the_cluster(exo_node_bin, default_model):
    chromium = shutil.which("chromium")
    if chromium is None:
        pytest.skip("chromium is not installed: run scripts/setup.sh")
    pytest.importorskip("websocket")
    if os.geteuid() != 0 or shutil.which("ip") is None:
        pytest.skip("needs root and iproute2 to create a network namespace")
    namespace = f"exo-webui-{os.getpid()}"
    subprocess.run(["ip", "netns", "add", namespace], check=True)
    try:
        subprocess.run(["ip", "netns", "exec", namespace, "ip", "link", "set", "lo", "up"],
                       check=True)
        screenshot = os.path.join(artifacts_dir(exo_node_bin), "webui.png")
        result = subprocess.run(
            ["ip", "netns", "exec", namespace, sys.executable, str(HERE), "drive", exo_node_bin,
             default_model, chromium, screenshot],
            capture_output=True, text=True, timeout=600)
        print(result.stdout)
        print(result.stderr[-4000:])
        assert result.returncode == 0, result.stdout + result.stderr[-4000:]
        report = json.loads(result.stdout.strip().splitlines()[-1])
        assert report["answer_done"]
        assert report["answer_text"].strip()
        # Seen while streaming: the answer grew through several lengths before it was done.
        assert len(report["partial_lengths"]) >= 2, report
        assert report["nodes"] == 1 and "layers 0–18 of 18" in report["cluster_text"]
        assert "tokens/s" in report["cluster_text"]
        assert report["models"] == ["gemma-3-270m-q4_k_m"]
        assert report["meta"].endswith(("length", "stop"))
        assert report["escaped"], "markdown rendering let HTML through"
        assert os.path.getsize(screenshot) > 10000
    finally:
        subprocess.run(["ip", "netns", "delete", namespace], check=False)


# ---- The driver, run inside the namespace --------------------------------------------------------

class Page:
    """A minimal DevTools protocol client for one page."""

    def __init__(self, ws_url):
        import websocket
        self.ws = websocket.create_connection(ws_url, timeout=60, suppress_origin=True)
        self.next_id = 0

    def call(self, method, **params):
        self.next_id += 1
        self.ws.send(json.dumps({"id": self.next_id, "method": method, "params": params}))
        while True:
            message = json.loads(self.ws.recv())
            if message.get("id") == self.next_id:
                if "error" in message:
                    raise RuntimeError(f"{method}: {message['error']}")
                return message["result"]

    def eval(self, expression):
        result = self.call("Runtime.evaluate", expression=expression, returnByValue=True,
                           awaitPromise=True)
        if "exceptionDetails" in result:
            raise RuntimeError(f"{expression}: {result['exceptionDetails']}")
        return result["result"].get("value")


def wait_for(predicate, timeout, what):
    deadline = time.time() + timeout
    while time.time() < deadline:
        try:
            value = predicate()
        except RuntimeError:  # e.g. the page is still loading
            value = None
        if value:
            return value
        time.sleep(0.05)
    raise TimeoutError(what)


def drive(binary, model, chromium, screenshot):
    server = subprocess.Popen([binary, "serve", "--nocluster", "--model", model, "--http_port", "0",
                               "--http_bind", "127.0.0.1", "--ctx", "512", "--max_sequences", "4"],
                              stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    profile = tempfile.mkdtemp(prefix="exo-webui-chromium-")
    browser = None
    try:
        url = re.search(r"(http://[\d.]+:\d+)", server.stdout.readline()).group(1)

        def healthy():
            try:
                return urllib.request.urlopen(url + "/health", timeout=5).status == 200
            except Exception:
                return False
        wait_for(healthy, 120, "model load")
        browser = subprocess.Popen(
            [chromium, "--headless=new", "--no-sandbox", "--disable-gpu", "--no-first-run",
             "--disable-background-networking", "--disable-component-update", "--disable-sync",
             "--disable-default-apps", "--disable-extensions", "--disable-dev-shm-usage",
             "--remote-debugging-port=0", "--remote-debugging-address=127.0.0.1",
             f"--user-data-dir={profile}", "--window-size=1280,800", url + "/"],
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        devtools = None
        for line in browser.stderr:
            match = re.search(r"DevTools listening on ws://([\d.]+:\d+)/", line)
            if match:
                devtools = match.group(1)
                break
        if devtools is None:
            raise RuntimeError("chromium did not start its DevTools server")

        def page_target():
            targets = json.load(urllib.request.urlopen(f"http://{devtools}/json/list"))
            pages = [t for t in targets if t["type"] == "page" and t["url"].startswith(url)]
            return pages[0] if pages else None
        target = wait_for(page_target, 60, "the page")
        page = Page(target["webSocketDebuggerUrl"])
        page.call("Runtime.enable")
        wait_for(lambda: page.eval("document.getElementById('model').options.length > 0"), 30,
                 "the model list")
        wait_for(lambda: page.eval("document.querySelectorAll('#nodes .node').length > 0"), 30,
                 "the cluster view")
        models = page.eval("[...document.getElementById('model').options].map(o => o.value)")
        # Type the message as a user would: focus, insert text, press Enter.
        page.eval("document.getElementById('temperature').value = '0';"
                  "document.getElementById('maxtokens').value = '48';"
                  "document.getElementById('input').focus()")
        page.call("Input.insertText", text="Write a short poem about the sea.")
        for kind in ("rawKeyDown", "char", "keyUp"):
            page.call("Input.dispatchKeyEvent", type=kind, key="Enter", code="Enter",
                      windowsVirtualKeyCode=13, text="\r" if kind == "char" else "")
        partial = []
        deadline = time.time() + 120
        state = {}
        while time.time() < deadline:
            state = page.eval("""(() => {
                const a = document.querySelector('.msg.assistant');
                return a ? {text: a.querySelector('.body').innerText, done: a.dataset.done === 'true',
                            meta: a.querySelector('.meta').innerText} : {};
            })()""")
            if state.get("text") and not state.get("done"):
                if not partial or partial[-1] != len(state["text"]):
                    partial.append(len(state["text"]))
            if state.get("done"):
                break
            time.sleep(0.02)
        # Let the cluster view refresh with the finished answer's figures.
        time.sleep(1.5)
        cluster_text = page.eval("document.getElementById('cluster').innerText")
        escaped = page.eval(
            "(() => { const h = renderMarkdown('<img src=x onerror=alert(1)> **b** `<i>`');"
            " return !h.includes('<img') && h.includes('&lt;img') && h.includes('<strong>b</strong>')"
            " && h.includes('<code>&lt;i&gt;</code>'); })()")
        shot = page.call("Page.captureScreenshot", format="png")
        with open(screenshot, "wb") as f:
            f.write(base64.b64decode(shot["data"]))
        print(json.dumps({
            "answer_done": state.get("done", False), "answer_text": state.get("text", ""),
            "meta": state.get("meta", ""), "partial_lengths": partial,
            "nodes": page.eval("document.querySelectorAll('#nodes .node').length"),
            "cluster_text": cluster_text, "models": models, "escaped": escaped,
        }))
    finally:
        if browser is not None:
            browser.terminate()
            browser.wait(timeout=30)
        server.terminate()
        server.wait(timeout=30)
        shutil.rmtree(profile, ignore_errors=True)


if __name__ == "__main__" and len(sys.argv) == 6 and sys.argv[1] == "drive":
    drive(*sys.argv[2:])
