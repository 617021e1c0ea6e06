"""PDMNet: the N-slice wavelet decision-map network, its weights and its device handling."""
