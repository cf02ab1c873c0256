"""``python -m metarec``: the command line (what ``torchrun -m metarec`` starts in each rank)."""

from metarec.cli import main

if __name__ == "__main__":
    main()
