"""Compare ssaf runs from their run directories: ``python scripts/compare.py outputs/ multirun/ --out reports/x``.

The same as the console script ``ssaf-compare`` (see ssaf.report)."""

from ssaf.report import main

if __name__ == "__main__":
    main()
