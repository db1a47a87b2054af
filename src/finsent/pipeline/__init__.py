"""`finsent run`: the whole notebook, composed from the layers below."""
