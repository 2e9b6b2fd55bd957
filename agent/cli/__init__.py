"""The `heartwire` command: argument parsing in main, one module per command family.

The top of the tree: may import any stage; nothing imports it.
"""
