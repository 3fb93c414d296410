"""The node agent (`fakestor node`): on each compute host, what the Nitro card is to an
instance; devices.py makes NBD exports block devices, imds.py serves the node's metadata."""
