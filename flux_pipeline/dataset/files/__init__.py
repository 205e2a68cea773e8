"""Where a dataset lives: its folders, storage written whole or not at all, image files and their hashes."""
