"""The Recycle Bin API (`rbin`, rest-json), served beside EC2 for requests signed for `rbin`."""
