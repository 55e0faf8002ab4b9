"""Stand-in Hydra app for launcher tests: `python tests/launcher_app/app.py -m mode=ok,raise init_seed=1,2`.

Files its runs like gptx.train (same sweep folders, result.json with status and test_loss, skip when
completed with the same config) but takes a second instead of a training run, records the
CUDA_VISIBLE_DEVICES it saw and when it ran, and fails on demand (mode=raise|exit|kill).
"""

import hashlib
import json
import os
import signal
import sys
import time
from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, OmegaConf

from gptx.naming import register_resolvers

register_resolvers()


def write_result(run_dir: Path, result: dict) -> None:
    if os.environ.get("RANK", "0") != "0":  # a multi-GPU job: rank 0 writes, like gptx.train
        return
    tmp = run_dir / "result.json.tmp"
    tmp.write_text(json.dumps(result))
    os.replace(tmp, run_dir / "result.json")


@hydra.main(config_path="conf", config_name="config", version_base="1.3")
def main(cfg: DictConfig) -> dict:
    run_dir = Path(HydraConfig.get().runtime.output_dir)
    plain = OmegaConf.to_container(cfg, resolve=True)
    semantic = {k: v for k, v in plain.items() if k not in ("sweep", "overwrite")}
    config_sha = hashlib.sha256(json.dumps(semantic, sort_keys=True).encode()).hexdigest()
    try:
        previous = json.loads((run_dir / "result.json").read_text())
    except (OSError, ValueError):
        previous = {}
    if previous.get("status") == "completed" and previous.get("config_sha256") == config_sha:
        print(f"skipped {run_dir}")
        return {**previous, "skipped": True}
    (run_dir / ".hydra").mkdir(parents=True, exist_ok=True)
    (run_dir / ".hydra" / "config.yaml").write_text(OmegaConf.to_yaml(cfg))
    overrides = list(HydraConfig.get().overrides.task)
    (run_dir / ".hydra" / "overrides.yaml").write_text(OmegaConf.to_yaml(overrides))
    result = {"status": "running", "intervention": ["baseline"], "arm": "baseline",
              "init_seed": cfg.init_seed, "config_sha256": config_sha, "pid": os.getpid(),
              "start": time.time(),
              "cuda_visible_devices": os.environ.get("CUDA_VISIBLE_DEVICES"),
              "omp_num_threads": os.environ.get("OMP_NUM_THREADS"),
              "inductor_compile_threads": os.environ.get("TORCHINDUCTOR_COMPILE_THREADS"),
              "world_size": int(os.environ.get("WORLD_SIZE", "1"))}
    write_result(run_dir, result)
    print(f"job {cfg.init_seed} running on CUDA_VISIBLE_DEVICES={result['cuda_visible_devices']!r}")
    time.sleep(cfg.sleep_s)
    if cfg.mode == "raise":
        write_result(run_dir, {**result, "status": "failed", "error": "RuntimeError: asked to fail"})
        raise RuntimeError("asked to fail")
    if cfg.mode == "exit":
        sys.stdout.flush()
        os._exit(3)
    if cfg.mode == "kill":
        os.kill(os.getpid(), signal.SIGKILL)
    result.update(status="completed", end=time.time(), test_loss=1.0 + cfg.init_seed / 100,
                  wall_seconds=cfg.sleep_s)
    write_result(run_dir, result)
    return result


if __name__ == "__main__":
    main()
