"""The `srgan` command line: thin commands over the `engines` core."""
