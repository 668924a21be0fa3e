"""bench/gpu: the pack step stays under the GPU machine's 64 MiB with the working tree, and the one GPU script runs on
the CPU (`--device cpu --short`), so it is known to run before a GPU sees it. The whole dry run (every case, both
models) is `python bench/gpu/run.py --device cpu --short` (about 5 minutes here); this test runs one case and MiniLM's step times."""

import json
import subprocess
import sys

from conftest import REPO, SHARED_DATA, shared_glue


def test_pack_then_a_short_cpu_run_writes_the_report(tmp_path):
    shared_glue()  # the packed GLUE files come from ../shared/data
    env = {"PYTHONPATH": str(REPO / "src"), "HF_HUB_OFFLINE": "1", "PATH": "/usr/bin:/bin", "HOME": str(tmp_path)}
    bundle, out = tmp_path / "bundle", tmp_path / "out"
    packed = subprocess.run([sys.executable, str(REPO / "bench" / "gpu" / "pack.py"), "--out", str(bundle), "--tasks",
                             "sst2", "--data_dir", str(SHARED_DATA), "--no_wheels"], capture_output=True, text=True,
                            env=env, timeout=300)
    assert packed.returncode == 0, packed.stderr[-2000:]
    assert "(limit 64 MiB)" in packed.stdout and (bundle / "embedded" / "minilm" / "model.safetensors").is_file()
    size = sum(f.stat().st_size for f in bundle.rglob("*") if f.is_file())
    assert size < 55 * 2**20  # MiniLM in bf16 (45 MB) dominates: the repo and PEFT's wheel fit beside it

    done = subprocess.run([sys.executable, str(REPO / "bench" / "gpu" / "run.py"), "--device", "cpu", "--short",
                           "--bundle", str(bundle), "--out", str(out), "--cases", "LoRA-XS learned",
                           "--models", "MiniLM"], capture_output=True, text=True, env=env, timeout=900)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-3000:]
    results = json.loads((out / "results.json").read_text())
    assert [r["case"] for r in results["correctness"]] == ["LoRA-XS learned"]
    assert all(r["ok"] and r["finite"] and r["max_abs_logit_diff"] <= 0.05 for r in results["correctness"])
    assert len(results["step_time"]) == 4 and all(r["step_ms"] > 0 for r in results["step_time"])
    report = (out / "report.md").read_text()
    assert "## (a) Correctness" in report and "| LoRA-XS learned | completed |" in report
    assert "PEFT LoRA r1 (alone)" in report and "CUDA only" in report
