"""Follow the README like a newcomer: every command, in a fresh clone and a fresh virtual environment.

    python3 docs/newcomer.py                 # ~50 min on 2 cores (30 without the three compressed-sensing presets)
    python3 docs/newcomer.py --keep          # keep the temporary clone to look around
    python3 docs/newcomer.py --skip "sweep measurements"   # skip (and report as skipped) matching commands

It clones this repository (its committed state) into a temporary folder, then runs, in order and in
one virtual environment, every shell command of the README's code blocks (lines starting with
``python3``, ``geninv``, ``streamlit``, ``source`` / ``.``, ``GENINV_...=``, ``export``) and the Python
example of "As a library" as a script. A ``streamlit run`` is started in the background and must
answer ``/_stcore/health`` before it is stopped. After each command it records the exit status, the
seconds it took, and every file it created or changed outside the scratch folders (``out/``,
``.venv/``, caches); at the end ``git status`` must be clean. A README command that needs data the
clone does not have (the MNIST files) gets them from ``--mnist`` (default: $GENINV_MNIST_DATA).

The report says, per command: ok / failed, seconds, and what it wrote outside its scratch folder.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shlex
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SCRATCH = ("out/", ".venv/", ".pytest_cache/", ".hypothesis/", ".ruff_cache/", "__pycache__/", "data/")
STARTS = ("python3", "geninv ", "streamlit ", "source ", ". ", "export ", "GENINV_")


def readme_steps(text: str) -> list[dict]:
    """The README's runnable steps in order: shell lines and the library example."""
    steps = []
    fence = None
    block: list[str] = []
    lines = text.splitlines()
    i = 0
    while i < len(lines):
        line = lines[i]
        if fence is None and line.startswith("```"):
            fence = line[3:].strip()
            block = []
        elif fence is not None and line.startswith("```"):
            if fence == "python" and any("import geninv" in b for b in block):
                steps.append({"kind": "python", "code": "\n".join(block)})
            elif fence in ("", "bash", "sh", "console"):
                steps += [{"kind": "shell", "cmd": b.strip()} for b in block if b.strip().startswith(STARTS)]
            fence = None
        elif fence is not None:
            block.append(line)
        elif line.startswith("    ") and line.strip().startswith(STARTS):
            steps.append({"kind": "shell", "cmd": line.strip()})
        i += 1
    return [s for s in steps if not (s["kind"] == "shell" and s["cmd"].startswith("python3 docs/newcomer.py"))]


def snapshot(folder: Path) -> dict[str, tuple[int, float]]:
    out = {}
    for path in folder.rglob("*"):
        rel = path.relative_to(folder).as_posix()
        scratch = any(f"/{s}" in f"/{rel}" for s in SCRATCH) or ".egg-info/" in rel  # pip's editable-install metadata
        if path.is_file() and not rel.startswith(".git/") and not scratch:
            st = path.stat()
            out[rel] = (st.st_size, st.st_mtime)
    return out


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run_shell(cmd: str, clone: Path, env: dict, timeout: int) -> tuple[int, str]:
    activate = ". .venv/bin/activate 2>/dev/null; "
    if "streamlit run" in cmd:
        before, _, server = cmd.rpartition("&&") if "&&" in cmd else ("", "", cmd)
        if before.strip():
            rc, log = run_shell(before.strip(), clone, env, timeout)
            if rc:
                return rc, log
        port = _free_port()
        server = server.strip() + f" --server.headless true --server.address 127.0.0.1 --server.port {port}"
        proc = subprocess.Popen(
            ["bash", "-c", activate + server], cwd=clone, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT
        )
        deadline = time.monotonic() + 120
        try:
            while time.monotonic() < deadline:
                try:
                    with urllib.request.urlopen(f"http://127.0.0.1:{port}/_stcore/health", timeout=2) as r:
                        if r.read().decode().strip() == "ok":
                            return 0, "server answered /_stcore/health"
                except OSError:
                    time.sleep(0.5)
                if proc.poll() is not None:
                    break
            return 1, (proc.stdout.read().decode()[-2000:] if proc.stdout and proc.poll() is not None else "timeout")
        finally:
            proc.terminate()
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
    proc = subprocess.run(
        ["bash", "-c", activate + cmd], cwd=clone, env=env, capture_output=True, text=True, timeout=timeout
    )
    return proc.returncode, (proc.stdout + proc.stderr)[-2000:]


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--mnist", default=os.environ.get("GENINV_MNIST_DATA"), help="folder with the MNIST files")
    parser.add_argument("--timeout", type=int, default=1800, help="seconds per command")
    parser.add_argument("--keep", action="store_true", help="keep the temporary clone")
    parser.add_argument("--out", default=str(ROOT / "out" / "newcomer.json"))
    parser.add_argument("--skip", action="append", default=[], help="regular expression: commands to skip")
    args = parser.parse_args(argv)

    tmp = Path(tempfile.mkdtemp(prefix="geninv-newcomer-"))
    clone = tmp / "geninv"
    subprocess.run(["git", "clone", "-q", str(ROOT), str(clone)], check=True)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("VIRTUAL_ENV", "PYTHONPATH"))}
    env["PIP_DISABLE_PIP_VERSION_CHECK"] = "1"
    if args.mnist:
        env["GENINV_MNIST_DATA"] = str(Path(args.mnist).resolve())
    steps = readme_steps((clone / "README.md").read_text())
    report = {"clone": str(clone), "steps": []}
    before = snapshot(clone)
    for step in steps:
        if step["kind"] == "shell" and any(re.search(pattern, step["cmd"]) for pattern in args.skip):
            report["steps"].append({"command": step["cmd"], "ok": True, "skipped": True, "seconds": 0, "wrote": []})
            print(f"skip {0:7.1f} s  {step['cmd'][:90]}")
            continue
        start = time.perf_counter()
        if step["kind"] == "python":
            script = clone / "out" / "readme_example.py"
            script.parent.mkdir(exist_ok=True)
            script.write_text(step["code"] + "\n")
            rc, log = run_shell(f"python3 {shlex.quote(str(script))}", clone, env, args.timeout)
            label = "README library example"
        else:
            rc, log = run_shell(step["cmd"], clone, env, args.timeout)
            label = step["cmd"]
        seconds = time.perf_counter() - start
        after = snapshot(clone)
        wrote = sorted(k for k in after if before.get(k) != after[k])
        before = after
        report["steps"].append({"command": label, "ok": rc == 0, "seconds": round(seconds, 1), "wrote": wrote})
        mark = "ok  " if rc == 0 else "FAIL"
        print(f"{mark} {seconds:7.1f} s  {label[:90]}" + (f"\n      wrote outside scratch: {wrote}" if wrote else ""))
        if rc:
            print("      " + re.sub(r"\n", "\n      ", log.strip()[-800:]))
    status = subprocess.run(["git", "status", "--porcelain"], cwd=clone, capture_output=True, text=True).stdout
    report["git_status_clean"] = not status.strip()
    report["git_status"] = status
    report["all_ok"] = all(s["ok"] for s in report["steps"]) and report["git_status_clean"]
    print(f"git status afterwards: {'clean' if not status.strip() else status}")
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(report, indent=1) + "\n")
    print(f"wrote {args.out}")
    if not args.keep:
        shutil.rmtree(tmp, ignore_errors=True)
    return 0 if report["all_ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
