"""The napari side of the plugin: the dock widget and its panels (3-D model, retouch, review),
its runs, the result layers, the samples, the height view and the retouch sessions. Only the
widget and its panels import Qt; the other modules can be used from scripts."""
