"""Every benchmark, one after another, each printing its JSON lines (`make bench`)."""

import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).parent
for script in ["scorer.py", "train_overhead.py", "train_throughput.py", "trial_overhead.py", "zero3_load.py", "optimizer_step.py",
               "stacked_trial.py", "dpo_policy.py", "dpo_trial.py", "trial_memory.py"]:
    print(f"== {script}", flush=True)
    subprocess.run([sys.executable, str(HERE / script)], check=True)
