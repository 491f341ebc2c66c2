"""The user documentation (the .md files here); installed as `cab.docs`, so `cab --help` can say where it is."""
