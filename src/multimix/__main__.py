"""``python -m multimix`` (also what ``torchrun -m multimix`` runs)."""

from multimix.cli.app import main

if __name__ == "__main__":
    main()
