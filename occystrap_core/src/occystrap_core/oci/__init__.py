"""The image formats, in one place: references, platforms, manifests and indexes,
and the rules that turn one format into another. Plugins use these, never their own."""
