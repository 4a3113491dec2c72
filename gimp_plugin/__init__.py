"""The GIMP 3 plug-in's files, shipped so that `srgan gimp install` can copy them."""
