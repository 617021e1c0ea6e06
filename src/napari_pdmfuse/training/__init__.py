"""Training PDMNet, apart from what users run: rendering stacks with known truth
(:mod:`.rendering`), real defocus series composed into stacks with known truth (:mod:`.defocus`),
training examples and batches (:mod:`.data`), the recipe that writes the shipped weights
(:mod:`.recipe`, ``python -m napari_pdmfuse.training``) and its focus-map stage (:mod:`.focus`).
"""
