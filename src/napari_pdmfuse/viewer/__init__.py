"""The napari side of the plugin: the dock widget, its runs, the result layers, the samples and
the height view. Only :mod:`.widget` imports Qt; the other modules can be used from scripts."""
