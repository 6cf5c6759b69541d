"""`python -m biomamba ...` is the same as the `biomamba` command."""
from biomamba.cli import main

if __name__ == "__main__":
    raise SystemExit(main())
