"""Pack what an offline GPU machine needs to run `bench/gpu/run.py`, into one folder that travels with the repo.

    python bench/gpu/pack.py                      # -> .gpu_bundle/ (git-ignored), size checked
    python bench/gpu/pack.py --tasks cola,stsb,mrpc,rte --out .gpu_bundle

The machine has no internet, a Python with torch, transformers, peft and accelerate (other versions than ours) but
not `datasets`, and receives at most 64 MiB with the working tree. The bundle holds:

- `embedded/minilm/`: all-MiniLM-L6-v2 in bfloat16 safetensors (45 MB instead of 91) with its tokenizer, found by
  rankwise as the embedded `minilm` through RANKWISE_EMBEDDED_DIR;
- `smollm2-135m/config.json`: SmolLM2-135M's architecture only (its weights would not fit): the step-time
  benchmark builds it with random weights, which take exactly as long to multiply;
- `data/glue/<Task>/{train,dev}.tsv` for the tasks asked for (whole files, as ../shared/data has them);
- `wheels/`: the PEFT release rankwise is tested with (0.21.x; the machine's may be another), installed with
  `pip install --no-deps --target`.

The size of the working tree plus the bundle is checked against the limit before anything is written.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
LIMIT = 64 * 2**20
TASK_FOLDERS = {"cola": "CoLA", "sst2": "SST-2", "mrpc": "MRPC", "rte": "RTE", "stsb": "STS-B"}
PEFT = "peft==0.21.2"
MARKER = ".rankwise-gpu-bundle"


def tree_bytes() -> int:
    """Bytes of the files that travel with the working tree: tracked and untracked-not-ignored ones."""
    listed = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"], cwd=REPO,
                            capture_output=True, check=True).stdout.decode().split("\0")
    return sum((REPO / f).stat().st_size for f in listed if f and (REPO / f).is_file())


def folder_bytes(path: Path) -> int:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())


def pack_minilm(out: Path) -> None:
    import torch
    from safetensors.torch import load_file, save_file

    from rankwise.models import embedded_path

    source = embedded_path("minilm")
    out.mkdir(parents=True)
    tensors = {k: (v.to(torch.bfloat16) if v.is_floating_point() else v)
               for k, v in load_file(str(source / "model.safetensors")).items()}
    save_file(tensors, str(out / "model.safetensors"), metadata={"format": "pt"})
    config = json.loads((source / "config.json").read_text())
    config["torch_dtype"] = "bfloat16"  # rankwise loads in float32 and casts the frozen weights itself
    (out / "config.json").write_text(json.dumps(config, indent=2))
    for name in ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "vocab.txt"):
        shutil.copy2(source / name, out / name)


def pack_smollm2_config(out: Path) -> None:
    """SmolLM2-135M's config, read from its GGUF's metadata (no de-quantisation needed)."""
    from transformers import AutoConfig

    from rankwise.models import embedded_path

    gguf = embedded_path("smollm2-135m")
    AutoConfig.from_pretrained(gguf.parent, gguf_file=gguf.name).save_pretrained(out)


def pack_data(out: Path, tasks: list[str], data_dir: Path) -> None:
    for task in tasks:
        folder = TASK_FOLDERS[task]
        (out / folder).mkdir(parents=True)
        for split in ("train.tsv", "dev.tsv"):
            shutil.copy2(data_dir / "glue" / folder / split, out / folder / split)


def pack_wheels(out: Path) -> None:
    out.mkdir(parents=True)
    subprocess.run([sys.executable, "-m", "pip", "download", "-q", "--no-deps", "--only-binary=:all:", "-d", str(out),
                    PEFT], check=True)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", default=str(REPO / ".gpu_bundle"))
    parser.add_argument("--tasks", default="sst2,stsb", help="GLUE tasks whose files travel (comma-separated)")
    parser.add_argument("--data_dir", default=os.environ.get("RANKWISE_DATA_DIR", str(REPO.parent / "shared" / "data")))
    parser.add_argument("--no_wheels", action="store_true", help="leave PEFT out (the machine has the right one)")
    args = parser.parse_args(argv)
    tasks = [t for t in args.tasks.split(",") if t]
    unknown = [t for t in tasks if t not in TASK_FOLDERS]
    if unknown:
        parser.error(f"--tasks: unknown task(s) {', '.join(unknown)}; choose from {', '.join(TASK_FOLDERS)}")
    out = Path(args.out)
    if out.exists() and not (out / MARKER).is_file():
        parser.error(f"--out: {out} exists and is not a bundle this script wrote; give another --out")
    staging = out.with_name(out.name + ".partial")
    shutil.rmtree(staging, ignore_errors=True)
    pack_minilm(staging / "embedded" / "minilm")
    pack_smollm2_config(staging / "smollm2-135m")
    pack_data(staging / "data" / "glue", tasks, Path(args.data_dir))
    if not args.no_wheels:
        pack_wheels(staging / "wheels")
    (staging / MARKER).write_text("written by bench/gpu/pack.py\n")
    bundle, tree = folder_bytes(staging), tree_bytes()  # both travel: the bundle is carried with the working tree
    total = bundle + tree
    print(f"bundle {bundle / 2**20:.1f} MiB + working tree {tree / 2**20:.1f} MiB = {total / 2**20:.1f} MiB "
          f"(limit {LIMIT / 2**20:.0f} MiB)")
    if total > LIMIT:
        shutil.rmtree(staging)
        print(f"error: over the limit by {(total - LIMIT) / 2**20:.1f} MiB: pack fewer --tasks (or --no_wheels)",
              file=sys.stderr)
        return 2
    shutil.rmtree(out, ignore_errors=True)
    staging.rename(out)
    print(f"packed {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
