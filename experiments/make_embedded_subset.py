"""Regenerate the embedded rMD17 paracetamol subset shipped in lrnn/data/embedded/.

Usage: python experiments/make_embedded_subset.py [RMD17_DIR]   (default ../shared/data/rmd17)
"""

import sys
from pathlib import Path

import numpy as np

src = Path(sys.argv[1] if len(sys.argv) > 1 else Path(__file__).resolve().parents[1] / "../shared/data/rmd17")
dst = Path(__file__).resolve().parents[1] / "lrnn" / "data" / "embedded"
for part, n in [("train", 1000), ("test", 500)]:
    d = np.load(src / f"rmd17_paracetamol_{part}_01.npz")
    idx = np.arange(n)
    np.savez_compressed(dst / f"rmd17_paracetamol_{part}01_subset.npz", nuclear_charges=d["nuclear_charges"],
                        coords=d["coords"][idx].astype(np.float32), energies=d["energies"][idx],
                        forces=d["forces"][idx].astype(np.float32), old_indices=d["old_indices"][idx])
    print(part, n, "->", dst)
