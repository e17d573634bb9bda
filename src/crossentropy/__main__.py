"""``python -m crossentropy``: the same as the ``crossentropy`` console script."""

from crossentropy.cli import main

if __name__ == "__main__":
    main()
