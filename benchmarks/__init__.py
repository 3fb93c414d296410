"""Side-by-side measurements of fakestor and what a user would do instead."""
