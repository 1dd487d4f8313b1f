"""End-to-end serving numbers through the real Gradio server (`python app.py`).

    python benchmarks/serving.py                   # bundled weights (or --model FOLDER)
    python benchmarks/serving.py --smoke           # quick check

Measures, talking only to 127.0.0.1 through gradio_client:
  (a) cold start: launching `python app.py` on a free port -> first successful
      `/classify` answer (median of --cold-repeats launches);
  (b) API round trip: p50 of `/classify` then `/explain` on examples/apple.png,
      against a no-op Gradio app with the same components and endpoints
      (constant answers) measured in the same run; target ratio <= 1.5x;
  (c) load: --users concurrent clients (threads, one Client each) calling
      `/classify` for --duration seconds: requests/s, errors, and the server's
      RSS at start, middle and end (flat memory). Targets: >= 30 req/s, 0 errors.
      The same load on the no-op app gives Gradio's own ceiling on this machine.

Last line: `cold_start_s=... roundtrip_ratio=... rps=... errors=... noop_rps=... rss_mb_start=...
rss_mb_end=...`.
"""

from __future__ import annotations

import argparse
import os
import ssl
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

from _common import ROOT, UNTRAINED_WARNING, chosen_folder, print_table

sys.path.insert(0, str(ROOT / "tests"))
from app_server import free_port  # noqa: E402

EXAMPLE = str(ROOT / "examples" / "apple.png")
CALL_TIMEOUT = 60.0  # seconds for any one API call
NOOP_APP = '''
"""No-op twin of app.py's API: same components and endpoints, constant answers."""
import gradio as gr
from PIL import Image


class UploadImage(gr.Image):  # as in app.py: hands the raw upload over untouched
    is_template = True

    def preprocess(self, payload):
        return None if payload is None else payload.path


LABEL = {"apple": 0.5, "orange": 0.2, "pear": 0.1, "rose": 0.1, "tulip": 0.1}
MAP = Image.open(EXAMPLE).convert("RGB").resize((320, 320), Image.BICUBIC)
MAP.encoderinfo = {"compress_level": 1}  # as app.py's maps: fast lossless PNG
with gr.Blocks() as demo:
    image = UploadImage(type="filepath", visible=False)
    options = [gr.Radio(["mean", "max", "min"], value="mean", visible=False),
               gr.Number(0.0, visible=False), gr.Number(0, visible=False),
               gr.Number(0, visible=False), gr.Textbox(visible=False)]
    label = gr.Label(visible=False)
    maps = [gr.Image(visible=False, format="png") for _ in range(3)]  # as app.py: lossless
    gr.Button(visible=False).click(lambda img: LABEL, image, label, api_name="classify")
    gr.Button(visible=False).click(lambda img, *o: (LABEL, MAP, MAP, MAP), [image, *options],
                                   [label, *maps], api_name="explain")
demo.queue(default_concurrency_limit=4)
demo.launch(max_file_size=20 * 1024 * 1024)
'''


class Server:
    """`python SCRIPT ARGS` on a free 127.0.0.1 port (like tests/app_server.AppServer)."""

    def __init__(self, script: str, *args: str, timeout: float = 300):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.cmd, self.timeout = [sys.executable, script, *args], timeout
        self.log = tempfile.NamedTemporaryFile("w+", suffix=".log", delete=False)

    def start(self) -> "Server":
        env = {**os.environ, "GRADIO_SERVER_PORT": str(self.port),
               "GRADIO_SERVER_NAME": "127.0.0.1", "GRADIO_ANALYTICS_ENABLED": "False",
               "HF_HUB_DISABLE_TELEMETRY": "1"}
        self.started = time.perf_counter()
        self.proc = subprocess.Popen(self.cmd, cwd=ROOT, env=env, stdout=self.log,
                                     stderr=subprocess.STDOUT)
        deadline = time.time() + self.timeout
        while time.time() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.cmd[1]} exited early:\n{self.output()}")
            try:
                with urllib.request.urlopen(self.url + "/config", timeout=2) as r:
                    if r.status == 200:
                        return self
            except OSError:
                time.sleep(0.1)
        log = self.output()
        self.stop()
        raise TimeoutError(f"{self.cmd[1]} did not start:\n{log}")

    def output(self) -> str:
        self.log.flush()
        return Path(self.log.name).read_text(errors="replace")[-3000:]

    def rss_mb(self) -> float:
        try:
            import psutil

            return psutil.Process(self.proc.pid).memory_info().rss / 2**20
        except ImportError:
            with open(f"/proc/{self.proc.pid}/status") as f:
                kb = next(line.split()[1] for line in f if line.startswith("VmRSS:"))
            return int(kb) / 1024

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(10)
        self.log.close()
        os.unlink(self.log.name)


# gradio_client opens a fresh httpx client for every upload, submit and stream,
# and each one re-reads the CA bundle into a new SSL context (~25 ms CPU; known
# httpx cost: encode/httpx#2298, #3627), even for plain http://127.0.0.1. That
# made the load generator, not the server, the bottleneck (137 ms of client CPU
# per request, 13 req/s for a no-op app). httpx accepts a ready SSLContext as
# `verify`, so one shared context keeps verification and drops the cost.
SSL_CONTEXT = ssl.create_default_context()


def client_for(url: str):
    from gradio_client import Client

    return Client(url, verbose=False, ssl_verify=SSL_CONTEXT)


def call(client, endpoint: str, *args):
    from gradio_client import handle_file

    return client.submit(handle_file(EXAMPLE), *args, api_name=endpoint).result(CALL_TIMEOUT)


def cold_start(app_args: list[str]) -> tuple[Server, float, float]:
    """(running server, seconds to /config, seconds to the first /classify answer)."""
    server = Server(str(ROOT / "app.py"), *app_args)
    server.start()
    ready = time.perf_counter() - server.started
    try:
        call(client_for(server.url), "/classify")
    except Exception as exc:
        log = server.output()
        server.stop()
        raise RuntimeError(f"first /classify failed: {exc}\n{log}") from exc
    return server, ready, time.perf_counter() - server.started


def roundtrip_p50_ms(client, trips: int) -> float:
    """p50 ms of /classify followed by /explain (after 2 untimed trips)."""
    times = []
    for i in range(trips + 2):
        t0 = time.perf_counter()
        call(client, "/classify")
        call(client, "/explain", "mean", 0.0, 0, 0, "")
        if i >= 2:
            times.append((time.perf_counter() - t0) * 1000)
    return statistics.median(times)


def load_test(server: Server, users: int, duration: float, max_per_user: int = 100_000):
    """(requests/s, successes, errors, first error, rss MB at start, middle, end)."""
    clients = [client_for(server.url) for _ in range(users)]
    ok, errors, messages, lock = [0], [0], [], threading.Lock()
    go = threading.Event()
    deadline = [0.0]

    def user(client):
        go.wait()
        for _ in range(max_per_user):
            if time.perf_counter() >= deadline[0]:
                break
            try:
                call(client, "/classify")
                with lock:
                    ok[0] += 1
            except Exception as exc:  # noqa: BLE001 - every failure counts as an error
                with lock:
                    errors[0] += 1
                    messages.append(f"{type(exc).__name__}: {exc}"[:200])

    threads = [threading.Thread(target=user, args=(c,), daemon=True) for c in clients]
    for t in threads:
        t.start()
    rss = [server.rss_mb()]
    t0 = time.perf_counter()
    deadline[0] = t0 + duration
    go.set()
    time.sleep(duration / 2)
    rss.append(server.rss_mb())
    for t in threads:
        t.join(timeout=max(0.0, deadline[0] - time.perf_counter()) + CALL_TIMEOUT + 5)
    elapsed = time.perf_counter() - t0
    rss.append(server.rss_mb())
    return ok[0] / elapsed, ok[0], errors[0], (messages or [""])[0], *rss


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--model", default=None, metavar="FOLDER",
                   help="model folder for app.py (default: bundled weights, else untrained)")
    p.add_argument("--cold-repeats", type=int, default=3, help="app launches (median)")
    p.add_argument("--trips", type=int, default=30, help="timed round trips per run")
    p.add_argument("--repeats", type=int, default=3, help="round-trip runs (median)")
    p.add_argument("--users", type=int, default=16, help="concurrent clients")
    p.add_argument("--duration", type=float, default=20.0, help="load-test seconds")
    p.add_argument("--smoke", action="store_true",
                   help="a very short run that only checks the script works")
    args = p.parse_args(argv)
    if args.smoke:
        args.cold_repeats, args.trips, args.repeats, args.duration = 1, 3, 1, 3.0
    if chosen_folder(args.model) is None:
        print(UNTRAINED_WARNING, flush=True)
    app_args = ["--model", args.model] if args.model else []

    ready, colds, server, noop = [], [], None, None
    noop_file = tempfile.NamedTemporaryFile("w", suffix="_noop_app.py", delete=False)
    noop_file.write(f"EXAMPLE = {EXAMPLE!r}\n{NOOP_APP}")
    noop_file.close()
    try:
        for i in range(args.cold_repeats):
            server, r, c = cold_start(app_args)
            ready.append(r)
            colds.append(c)
            print(f"  launch {i + 1}: /config after {r:.1f} s, first /classify after {c:.1f} s",
                  flush=True)
            if i < args.cold_repeats - 1:
                server.stop()
        noop = Server(noop_file.name).start()
        real_client, noop_client = client_for(server.url), client_for(noop.url)
        real_ms, noop_ms = [], []
        for _ in range(args.repeats):  # interleaved, so both see the same machine
            real_ms.append(roundtrip_p50_ms(real_client, args.trips))
            noop_ms.append(roundtrip_p50_ms(noop_client, args.trips))
        noop_rps, *_ = load_test(noop, args.users, args.duration)
        noop.stop()
        noop = None
        rps, done, errors, first_error, *rss = load_test(server, args.users, args.duration)
    finally:
        for s in (server, noop):
            if s is not None:
                s.stop()
        os.unlink(noop_file.name)

    cold, real, base = (statistics.median(v) for v in (colds, real_ms, noop_ms))
    ratio = real / base
    print_table(["measure", "value", "target"], [
        ["cold start: app.py -> /config (s)", f"{statistics.median(ready):.1f}", ""],
        ["cold start: app.py -> first /classify (s)", f"{cold:.1f}", ""],
        ["round trip classify+explain, app (ms p50)", f"{real:.1f}", ""],
        ["round trip classify+explain, no-op app (ms p50)", f"{base:.1f}", ""],
        ["round-trip ratio app / no-op", f"{ratio:.2f}x", "<= 1.5x"],
        [f"load: {args.users} users x {args.duration:.0f} s, requests/s", f"{rps:.1f}",
         ">= 30"],
        ["load: same clients on the no-op app, requests/s", f"{noop_rps:.1f}",
         "(Gradio's own ceiling)"],
        ["load: successful requests", done, ""],
        ["load: errors", errors, "0"],
        ["server RSS start / middle / end (MB)", " / ".join(f"{m:.0f}" for m in rss),
         "flat"],
    ], f"Serving (median of {args.cold_repeats} launches; {args.repeats} x {args.trips} "
       "round trips)")
    if first_error:
        print(f"first error: {first_error}")
    print(f"cold_start_s={cold:.2f} roundtrip_ratio={ratio:.3f} rps={rps:.2f} errors={errors} "
          f"noop_rps={noop_rps:.2f} "
          f"rss_mb_start={rss[0]:.1f} rss_mb_end={rss[-1]:.1f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
