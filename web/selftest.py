#!/usr/bin/env python3
"""Drives web/www/index.html?selftest in headless Chromium (SwiftShader WebGPU) and checks it.

Serves web/www on 127.0.0.1 with the data set beside it, drives Chromium through chromedriver's
W3C WebDriver HTTP API (standard library only), waits for the page's JSON report, then clicks the
page's download button and evaluates the downloaded model.safetensors with `fmnist-gpu eval`.
Fails (exit 1) on any kernel row out of tolerance, a validation accuracy not clearly above chance,
or a CLI test accuracy that is not the page's.

usage: web/selftest.py --binary target/release/fmnist-gpu [--data DIR] [--limit N] [--timeout S]
"""
import argparse, functools, http.server, json, os, shutil, socket, subprocess, sys, tempfile
import threading, time, urllib.request

HERE = os.path.dirname(os.path.abspath(__file__))
CHROME_ARGS = [
    "--headless=new", "--no-sandbox", "--disable-gpu-sandbox", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
    "--disable-quic", "--disable-dev-shm-usage",
    # A CPU Vulkan runs the larger kernel-table cases for seconds; the GPU watchdog would take
    # that for a hung GPU and kill the device.
    "--disable-gpu-watchdog",
    # WebGPU on SwiftShader, Chromium's CPU Vulkan (../shared/notes/browser.md).
    "--enable-unsafe-webgpu", "--enable-features=Vulkan", "--use-vulkan=swiftshader",
    "--use-webgpu-adapter=swiftshader", "--enable-unsafe-swiftshader",
]


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Handler(http.server.SimpleHTTPRequestHandler):
    extensions_map = {**http.server.SimpleHTTPRequestHandler.extensions_map,
                      ".wasm": "application/wasm", ".js": "text/javascript"}

    def log_message(self, *a):
        pass


def wd(base, method, path, body=None):
    req = urllib.request.Request(base + path, method=method,
                                 data=None if body is None else json.dumps(body).encode(),
                                 headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=120) as r:
        return json.loads(r.read() or b"{}").get("value")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--binary", required=True, help="the fmnist-gpu CLI, for eval")
    ap.add_argument("--data", default="/usr/share/datasets/fashion-mnist")
    ap.add_argument("--www", default=os.path.join(HERE, "www"))
    ap.add_argument("--limit", type=int, default=10000)
    ap.add_argument("--timeout", type=float, default=900)
    ap.add_argument("--cases", default="", help="FIRST-COUNT of the kernel table only (debugging)")
    ap.add_argument("--skip-table", action="store_true",
                    help="train without the kernel table first (debugging; the check then fails)")
    ap.add_argument("--chromium", default=shutil.which("chromium") or "/usr/bin/chromium")
    ap.add_argument("--chromedriver", default=shutil.which("chromedriver") or "/usr/bin/chromedriver")
    a = ap.parse_args()
    for tool, line in [(a.chromium, "apt-get install -y chromium"),
                       (a.chromedriver, "apt-get install -y chromium-driver")]:
        if not os.path.exists(tool):
            sys.exit(f"selftest: {tool} not found; install it with: {line}")
    if not os.path.exists(os.path.join(a.www, "pkg")):
        sys.exit(f"selftest: {a.www} has no pkg/: run web/build.sh first")

    work = tempfile.mkdtemp(prefix="fmnist-web-")
    site, downloads = os.path.join(work, "site"), os.path.join(work, "downloads")
    shutil.copytree(a.www, site)
    os.symlink(os.path.abspath(a.data), os.path.join(site, "data"))
    os.makedirs(downloads)
    port = free_port()
    server = http.server.ThreadingHTTPServer(("127.0.0.1", port),
                                             functools.partial(Handler, directory=site))
    threading.Thread(target=server.serve_forever, daemon=True).start()
    dport = free_port()
    driver = subprocess.Popen([a.chromedriver, f"--port={dport}",
                               f"--log-path={os.path.join(work, 'chromedriver.log')}"],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    base = f"http://127.0.0.1:{dport}"
    try:
        for _ in range(100):
            try:
                wd(base, "GET", "/status")
                break
            except OSError:
                time.sleep(0.1)
        caps = {"capabilities": {"alwaysMatch": {
            "browserName": "chrome",
            "goog:loggingPrefs": {"browser": "ALL"},
            "goog:chromeOptions": {
                "binary": a.chromium,
                "args": CHROME_ARGS + [f"--user-data-dir={os.path.join(work, 'profile')}",
                                      "--enable-logging", "--v=0"],
                "prefs": {"download.default_directory": downloads,
                          "download.prompt_for_download": False},
            }}}}
        sid = wd(base, "POST", "/session", caps)["sessionId"]
        s = f"/session/{sid}"
        wd(base, "POST", f"{s}/chromium/send_command",
           {"cmd": "Page.setDownloadBehavior",
            "params": {"behavior": "allow", "downloadPath": downloads}})
        url = f"http://127.0.0.1:{port}/index.html?selftest&data=data/&limit={a.limit}"
        if a.cases:
            url += f"&cases={a.cases}"
        if a.skip_table:
            url += "&skip-table"
        print(f"selftest: {url}", flush=True)
        wd(base, "POST", f"{s}/url", {"url": url})
        start, report, last, shown = time.time(), None, "", 0.0
        script = ("const r = document.getElementById('report');"
                  "return [r && r.dataset.done ? r.textContent : null,"
                  " document.getElementById('status').textContent];")
        while time.time() - start < a.timeout:
            done, st = wd(base, "POST", f"{s}/execute/sync", {"script": script, "args": []})
            # Kernel-table progress changes every case: shown every 15 s, other news at once.
            if st != last and ("kernel table, case" not in st or time.time() - shown > 15):
                print(f"  [{time.time() - start:6.1f} s] {st}", flush=True)
                shown = time.time()
            last = st
            if done:
                report = json.loads(done)
                break
            time.sleep(2)
        try:
            for e in wd(base, "POST", f"{s}/se/log", {"type": "browser"}) or []:
                if e.get("level") in ("SEVERE", "WARNING"):
                    print(f"  console: {e.get('message', '')[:400]}")
        except Exception as e:  # the log endpoint is a chromedriver extension
            print(f"  (no browser log: {e})")
        print(f"  last status: {last}")
        if report is None:
            sys.exit(f"selftest: no report after {a.timeout:.0f} s (last status: {last})")
        print(json.dumps(report, indent=1))
        problems = []
        if not report.get("ok"):
            problems.append(f"the page reported failure: {report.get('error') or report.get('kernel_failures')}")
        if report.get("kernels_passed") != report.get("kernels_total") or not report.get("kernels_total"):
            problems.append(f"kernels passed {report.get('kernels_passed')} of {report.get('kernels_total')}")
        if report.get("rows_passed") != report.get("rows_total"):
            problems.append(f"kernel rows passed {report.get('rows_passed')} of {report.get('rows_total')}")
        val = report.get("val_accuracy") or 0.0
        if val < 0.5:  # chance is 0.1; one epoch of 9,000 images gets well above 0.7
            problems.append(f"one-epoch validation accuracy {val} is not clearly above chance")
        if "test_accuracy" in report:
            button = wd(base, "POST", f"{s}/element", {"using": "css selector", "value": "#download"})
            wd(base, "POST", f"{s}/element/{list(button.values())[0]}/click", {})
            model = os.path.join(downloads, "model.safetensors")
            for _ in range(300):
                if os.path.exists(model) and not any(f.endswith(".crdownload") for f in os.listdir(downloads)):
                    break
                time.sleep(0.1)
            if not os.path.exists(model):
                problems.append("the page's download button left no model.safetensors")
            else:
                out = subprocess.run([a.binary, "eval", "--model", model, "--data", a.data,
                                      "--device", "cpu", "--json"],
                                     capture_output=True, text=True)
                if out.returncode != 0:
                    problems.append(f"fmnist-gpu eval failed on the page's model: {out.stderr.strip()}")
                else:
                    cli = json.loads(out.stdout)["accuracy"]
                    page = report["test_accuracy"]
                    print(f"selftest: test accuracy on the page {page:.4f}, fmnist-gpu eval "
                          f"(CPU backend) {cli:.4f} on {os.path.getsize(model)} bytes of model")
                    # Same weights, another device: only a near-tie argmax may differ.
                    if abs(cli - page) > 2e-4:
                        problems.append(f"eval gives {cli}, the page showed {page}")
        if problems:
            print(f"selftest: Chromium's log is in {work}/chromedriver.log")
            print("selftest FAILED:\n  " + "\n  ".join(problems))
            sys.exit(1)
        print("selftest passed")
    finally:
        try:
            wd(base, "DELETE", f"/session/{sid}")
        except Exception:
            pass
        driver.terminate()
        server.shutdown()


if __name__ == "__main__":
    main()
