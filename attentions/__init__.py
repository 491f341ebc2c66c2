"""Attention mechanisms, one module each; installed as `cab.attentions`. Every module here is
imported on the first registry lookup, so a new file with `@register_attention` is all it takes."""
