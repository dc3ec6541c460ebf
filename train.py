"""Fine-tune a BERT-style encoder with sparse attention: ``python train.py task=sst2 attn=sparse attn.lam=-2``.

The checkout's entry point: the installed ``ssaf-train`` (:mod:`ssaf.train_cli`) on this checkout's ``conf/``,
so that an edited config is the one that runs, whichever way ssaf is installed."""

from pathlib import Path

from ssaf.train_cli import main

if __name__ == "__main__":
    main(conf=Path(__file__).resolve().parent / "conf")
